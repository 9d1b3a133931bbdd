"""The bad-input corpus: every case names its exact outcome (message, exit code, what was
left untouched). CLI cases run the real `pasta` in this process; node cases send real frames
over DDS to a real node process, which must stay up, count each bad frame and say why."""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_ros

from pasta_ros.data.bags import BagWriter, write_bag_images
from pasta_ros.sources import folder_source


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (and whose pixel data is a stub): what a
    decompression bomb looks like to a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _copy_model(tiny_model: Path, dest: Path, **manifest_changes) -> Path:
    shutil.copytree(tiny_model, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    (dest / "manifest.json").write_text(json.dumps(manifest | manifest_changes))
    return dest


def _nan_centres(tiny_model: Path, dest: Path) -> Path:
    """A model whose centres hold NaN, with the arrays checksum made to match."""
    import hashlib
    import io

    shutil.copytree(tiny_model, dest)
    with np.load(dest / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["centers"][0, 0] = np.nan
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (dest / "arrays.npz").write_bytes(buf.getvalue())
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["arrays_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture(scope="module")
def corpus(tiny_steel, tiny_model, tmp_path_factory) -> dict[str, tuple[list, str]]:
    """name -> (argv, a substring of the one error line)."""
    t = tmp_path_factory.mktemp("corpus")
    folders = {name: t / name for name in ("empty", "unreadable", "huge", "tiny", "existing")}
    for f in folders.values():
        f.mkdir()
    (folders["unreadable"] / "a.png").write_bytes(b"not a png")
    (folders["unreadable"] / "b.jpg").write_bytes(b"")
    (folders["huge"] / "bomb.png").write_bytes(png_header_only(20000, 20000))
    for i in range(4):
        cv2.imwrite(str(folders["tiny"] / f"{i}.png"), np.full((1, 1, 3), 80, np.uint8))
    (folders["existing"] / "keep.txt").write_text("results of an earlier run")
    bags = t / "bags"
    frames = [rgb for _, rgb in folder_source(tiny_steel.baseline)()]
    write_bag_images(bags / "base", "/cam", frames, storage="mcap")
    with BagWriter(bags / "no_frames") as w:
        w.add_topic("/cam", "sensor_msgs/msg/Image")
    (bags / "corrupt.mcap").write_bytes(np.random.default_rng(0).bytes(2048))
    models = {
        "bad_json": _copy_model(tiny_model, t / "m_bad_json"),
        "not_object": _copy_model(tiny_model, t / "m_not_object"),
        "no_arrays": _copy_model(tiny_model, t / "m_no_arrays"),
        "bad_arrays": _copy_model(tiny_model, t / "m_bad_arrays"),
        "zero_size": _copy_model(tiny_model, t / "m_zero_size", input_size=[0, 0]),
        "bad_format": _copy_model(tiny_model, t / "m_bad_format", format="pasta-model/9"),
        "bad_threshold": _copy_model(tiny_model, t / "m_bad_threshold", vote_threshold=7.0),
        "nan": _nan_centres(tiny_model, t / "m_nan"),
    }
    (models["bad_json"] / "manifest.json").write_text("{ not json")
    (models["not_object"] / "manifest.json").write_text("[1, 2]")
    (models["no_arrays"] / "arrays.npz").unlink()
    (models["bad_arrays"] / "arrays.npz").write_bytes(b"garbage")
    cal = ["calibrate", "--baseline", tiny_steel.baseline, "--reference",
           tiny_steel.reference, "--clusters", "4"]
    seg = ["segment", "--model", tiny_model, "--out"]

    def segment_model(name: str) -> list:
        return ["segment", "--model", models[name], "--images", tiny_steel.test_images,
                "--out", t / f"s_{name}"]

    cases = {
        "calibrate onto an existing model": (
            [*cal, "--out", tiny_model], "already exists and is not empty"),
        "segment onto earlier results": (
            [*seg, folders["existing"], "--images", tiny_steel.test_images],
            "already exists and is not empty"),
        "segment an empty folder": (
            [*seg, t / "s1", "--images", folders["empty"]], "no image could be segmented"),
        "segment unreadable files only": (
            [*seg, t / "s2", "--images", folders["unreadable"]], "0 images read, 2 skipped"),
        "segment a 20000x20000 image": (
            [*seg, t / "s3", "--images", folders["huge"]], "0 images read, 1 skipped"),
        "segment a missing folder": (
            [*seg, t / "s4", "--images", t / "nowhere"], "image folder not found"),
        "images over max_image_pixels": (
            [*seg, t / "s5", "--images", tiny_steel.test_images, "--max-image-pixels", "1000"],
            "0 images read, 4 skipped"),
        "calibrate on 1x1 images": (
            [*cal[:2], folders["tiny"], *cal[3:], "--out", t / "m1"],
            "baseline set is empty"),
        "calibrate from a corrupt bag": (
            ["calibrate", "--baseline", bags / "corrupt.mcap", "--reference", bags / "base",
             "--topic", "/cam", "--out", t / "m2"], "is not a readable ROS 2 bag"),
        "calibrate from a bag without frames": (
            ["calibrate", "--baseline", bags / "no_frames", "--reference", bags / "base",
             "--topic", "/cam", "--out", t / "m3"], "has zero frames"),
        "calibrate from the wrong topic": (
            ["calibrate", "--baseline", bags / "base", "--reference", bags / "base",
             "--topic", "/elsewhere", "--out", t / "m4"], "'/elsewhere' is not in bag"),
        "manifest is not JSON": (segment_model("bad_json"), "is not valid JSON"),
        "manifest is not an object": (segment_model("not_object"), "expected a JSON object"),
        "arrays file missing": (segment_model("no_arrays"), "arrays.npz is missing"),
        "arrays file corrupt": (segment_model("bad_arrays"), "does not match the checksum"),
        "input size 0x0": (segment_model("zero_size"), "input size 0x0 with stride"),
        "unknown model format": (segment_model("bad_format"), "format 'pasta-model/9'"),
        "vote threshold 7 in a manifest": (segment_model("bad_threshold"),
                                           "vote_threshold 7.0 is outside [0, 1]"),
        "NaN centres with a valid checksum": (segment_model("nan"),
                                              "centers holds NaN or infinite values"),
        "vote threshold option out of range": (
            [*seg, t / "s6", "--images", tiny_steel.test_images, "--vote-threshold", "2"],
            "vote_threshold: 2.0 is outside [0.0, 1.0]"),
        "bad lineage name": (["models", "use", "x", "--root", t, "--lineage", "../up"],
                             "is not a valid name"),
    }
    return cases


CLI_CASES = ["calibrate onto an existing model", "segment onto earlier results",
             "segment an empty folder", "segment unreadable files only",
             "segment a 20000x20000 image", "segment a missing folder",
             "images over max_image_pixels", "calibrate on 1x1 images",
             "calibrate from a corrupt bag", "calibrate from a bag without frames",
             "calibrate from the wrong topic", "manifest is not JSON",
             "manifest is not an object", "arrays file missing", "arrays file corrupt",
             "input size 0x0", "unknown model format", "vote threshold 7 in a manifest",
             "NaN centres with a valid checksum", "vote threshold option out of range",
             "bad lineage name"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(run_cli, corpus, tiny_model, case):
    argv, expected = corpus[case]
    before = _tree(Path(tiny_model))
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    existed = out is not None and out.exists()
    old = _tree(out) if existed else None
    code, stdout, stderr = run_cli(["-q", *argv])
    assert code == 2 and stdout == "" and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr
    assert _tree(Path(tiny_model)) == before  # the model is never touched
    if out is not None:  # nothing written, nothing overwritten, no temporaries left
        assert (_tree(out) == old) if existed else not out.exists()
        assert not list(out.parent.glob(f".{out.name}.*"))


def test_overwrite_replaces_results_in_one_step(run_cli, tiny_steel, tiny_model, tmp_path):
    out = tmp_path / "seg"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "stale.png").write_bytes(b"old")
    code, stdout, stderr = run_cli(["-q", "segment", "--model", tiny_model, "--images",
                                    tiny_steel.test_images, "--out", out, "--overwrite"])
    assert code == 0, stderr
    assert not (out / "labels" / "stale.png").exists()  # old results do not mix with new
    names = sorted(p.stem for p in tiny_steel.test_images.iterdir())
    assert sorted(p.stem for p in (out / "labels").iterdir()) == names
    assert not list(tmp_path.glob(".seg.*"))


def test_a_huge_image_beside_good_ones_is_skipped_and_the_rest_written(run_cli, tiny_steel,
                                                                       tiny_model, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny_steel.test_images, folder)
    (folder / "0_bomb.png").write_bytes(png_header_only(20000, 20000))
    code, stdout, stderr = run_cli(["-q", "segment", "--model", tiny_model, "--images", folder,
                                    "--out", tmp_path / "seg"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["frames"] == 4 and result["skipped"] == 1
    assert len(json.loads((tmp_path / "seg" / "instances.json").read_text())) == 4


# --------------------------------------------------------------------------- the node

NS = "/corpus"
TOPIC = "/corpus/camera"
W, H = 224, 128
_stamps = itertools.count(3_000_000)


@pytest.fixture(scope="module")
def node_io(tiny_model, tmp_path_factory):
    """Two nodes with max_image_pixels 40000 (frames here are 224x128 = 28672), one on raw
    and one on compressed frames; this module's client, a camera for each, their outputs."""
    import contextlib

    require_ros()
    from sensor_msgs.msg import CompressedImage, Image

    from pasta_ros.data.synth import render_scene
    from pasta_ros.testing.ros_session import (
        Outputs,
        RosSession,
        compressed_msg,
        handshake,
        image_msg,
        running_node,
    )

    out = tmp_path_factory.mktemp("corpus_node")
    model = shutil.copytree(tiny_model, out / "model")  # frames of new sizes export graphs
    session = RosSession("pasta_test_corpus_client")
    rgb, _, _ = render_scene("steel", np.random.default_rng(5), W, H, 4, 2)
    io = {"rgb": rgb}
    try:
        with contextlib.ExitStack() as stack:
            for kind, msg_type, make in (("raw", Image, lambda ns: image_msg(rgb, "rgb8", ns)),
                                         ("compressed", CompressedImage,
                                          lambda ns: compressed_msg(rgb, ns))):
                ns, topic = f"{NS}_{kind}", f"{TOPIC}_{kind}"
                args = ["-r", "__node:=pasta_node", "-r", f"__ns:={ns}", "-r", f"image:={topic}",
                        "-p", f"model_dir:={model}", "-p", f"input_type:={kind}",
                        "-p", f"models_root:={out / 'models'}", "-p", "diagnostics_period:=0.2",
                        "-p", "max_image_pixels:=40000"]
                proc = stack.enter_context(running_node(session, args, out / f"{kind}.log",
                                                        namespace=ns))
                outputs = Outputs(session.client, ns)
                outputs.wait_matched(30.0)
                camera = session.client.node.create_publisher(msg_type, topic, 10)
                handshake(camera, outputs, make)
                io[msg_type] = {"proc": proc, "out": outputs, "camera": camera, "make": make}
            yield io
    finally:
        session.close()


def _raw(encoding: str, width: int, height: int, step: int, nbytes: int):
    from sensor_msgs.msg import Image

    return Image(encoding=encoding, width=width, height=height, step=step, data=bytes(nbytes))


def _compressed(data: bytes):
    from sensor_msgs.msg import CompressedImage

    return CompressedImage(format="png", data=data)


NODE_CASES = {
    "bayer_rggb8": (lambda: _raw("bayer_rggb8", W, H, W, W * H),
                    "unsupported image encoding 'bayer_rggb8'"),
    "yuv422": (lambda: _raw("yuv422", W, H, 2 * W, 2 * W * H),
               "unsupported image encoding 'yuv422'"),
    "32FC1": (lambda: _raw("32FC1", W, H, 4 * W, 4 * W * H),
              "unsupported image encoding '32FC1'"),
    "no encoding": (lambda: _raw("", W, H, 3 * W, 3 * W * H), "unsupported image encoding ''"),
    "step shorter than a row": (lambda: _raw("rgb8", W, H, W, 3 * W * H), "step"),
    "data shorter than step x height": (lambda: _raw("rgb8", W, H, 3 * W, 3 * W), "data"),
    "zero size": (lambda: _raw("rgb8", 0, 0, 0, 0), "0x0"),
    "1x1 frame": (lambda: _raw("rgb8", 1, 1, 3, 3), "too small to segment"),
    "3x2 frame": (lambda: _raw("rgb8", 3, 2, 9, 18), "too small to segment"),
    "frame over max_image_pixels": (lambda: _raw("rgb8", 256, 160, 768, 768 * 160),
                                    "frame is 256x160 = 40,960 pixels, over "
                                    "max_image_pixels = 40,000"),
    "compressed garbage": (lambda: _compressed(b"garbage"), "cannot be decoded"),
    "compressed empty": (lambda: _compressed(b""), "cannot be decoded"),
    "compressed 20000x20000 header": (lambda: _compressed(png_header_only(20000, 20000)),
                                      "frame has more than 178,956,970 pixels, over "
                                      "max_image_pixels"),
    "compressed 400x300 header": (lambda: _compressed(png_header_only(400, 300)),
                                  "frame is 400x300 = 120,000 pixels, over max_image_pixels"),
}


@pytest.mark.parametrize("case", list(NODE_CASES))
def test_node_bad_frame(node_io, case):
    make, expected = NODE_CASES[case]
    msg = make()
    node = node_io[type(msg)]
    out = node["out"]
    before = out.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 20.0)
    msg.header.stamp.sec = next(_stamps)
    node["camera"].publish(msg)
    v = out.wait_diagnostics(lambda v: v["frames_bad"] == before["frames_bad"] + 1, 20.0)
    assert expected in v["last_bad_frame"], v["last_bad_frame"]
    assert v["level"] == 1 and "bad frame" in v["message"], v["message"]
    # still serving: a good frame after the bad one comes out; no traceback anywhere
    stamp = next(_stamps)
    node["camera"].publish(node["make"](stamp * 1_000_000_000))
    out.wait_frame((stamp, 0), 30.0)
    assert node["proc"].alive() and "Traceback" not in node["proc"].log_tail(400)


def test_frames_changing_size_are_all_processed(node_io):
    from pasta_ros.testing.ros_session import image_msg

    node = node_io[type(_raw("rgb8", 1, 1, 3, 3))]
    for w, h in ((224, 128), (200, 176), (160, 96), (128, 224), (224, 128)):
        rgb = cv2.resize(node_io["rgb"], (w, h))
        stamp = next(_stamps)
        node["camera"].publish(image_msg(rgb, "rgb8", stamp * 1_000_000_000))
        labels, _ = node["out"].wait_frame((stamp, 0), 30.0)
        assert (labels.width, labels.height) == (w, h)
