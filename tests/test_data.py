"""Tests for pasta_ros.data: image conversion, bags, the dataset layout and the generator."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pasta_ros.data.bags import (
    IMAGE_MSGTYPE,
    TYPESTORE,
    BagError,
    BagWriter,
    image_from_msg_fields,
    image_to_msg_fields,
    list_image_topics,
    make_image_msg,
    read_bag_images,
    write_bag_images,
)
from pasta_ros.data.images import (
    ImageReadError,
    ReadStats,
    iter_images,
    list_images,
    read_image,
    to_rgb_uint8,
)
from pasta_ros.data.layout import (
    DatasetLayout,
    LayoutError,
    read_labels_csv,
    read_mask,
    test_pairs,
)
from pasta_ros.data.synth import generate, render_scene

T0 = 1_700_000_000_000_000_000


def _rgb(seed: int, h: int = 6, w: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# --------------------------------------------------------------------------- images


def test_to_rgb_uint8_gray_and_single_channel() -> None:
    gray = np.full((2, 3), 7, np.uint8)
    for img in (gray, gray[:, :, None]):
        out = to_rgb_uint8(img)
        assert out.shape == (2, 3, 3) and out.dtype == np.uint8
        assert (out == 7).all()


def test_to_rgb_uint8_rgba_drops_alpha_and_is_contiguous() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0
    out = to_rgb_uint8(rgba)
    assert out.shape == (2, 2, 3) and out.flags.c_contiguous
    assert out[0, 0].tolist() == [10, 20, 30]
    assert to_rgb_uint8(_rgb(0).transpose(1, 0, 2)).flags.c_contiguous


def test_to_rgb_uint8_uint16_and_float_scaling() -> None:
    u16 = np.array([[0, 255, 256, 65535]], np.uint16)
    assert to_rgb_uint8(u16)[0, :, 0].tolist() == [0, 0, 1, 255]
    f = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert to_rgb_uint8(f)[0, :, 1].tolist() == [0, 128, 255]


@pytest.mark.parametrize("bad", [
    np.zeros((0, 4, 3), np.uint8),
    np.zeros((4, 4, 2), np.uint8),
    np.zeros((2, 4, 4, 3), np.uint8),
    np.zeros((4, 4), np.int32),
    np.full((4, 4), 2.0, np.float32),
    np.full((4, 4), np.nan, np.float32),
])
def test_to_rgb_uint8_rejects(bad: np.ndarray) -> None:
    with pytest.raises(ImageReadError):
        to_rgb_uint8(bad)


def test_read_image_rgb_order(tmp_path: Path) -> None:
    rgb = _rgb(1)
    assert np.array_equal(read_image(_write_png(tmp_path / "a.png", rgb)), rgb)


def test_read_image_corrupt_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG garbage, not an image")
    with pytest.raises(ImageReadError, match="x.png"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_list_images_sorted_case_insensitive(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.Jpeg", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.Jpeg"]
    with pytest.raises(ImageReadError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_iter_images_skips_and_counts(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", _rgb(2))
    (tmp_path / "b.png").write_bytes(b"garbage")
    _write_png(tmp_path / "c.png", _rgb(3))
    stats, seen = ReadStats(), []
    out = list(iter_images(list_images(tmp_path), stats=stats,
                           on_skip=lambda p, why: seen.append(p.name)))
    assert [stem for stem, _ in out] == ["a", "c"]
    assert stats.read == 2 and stats.n_skipped == 1 and seen == ["b.png"]


# --------------------------------------------------------------------------- bags


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_bag_round_trip_color(tmp_path: Path, storage: str, encoding: str) -> None:
    frames = [_rgb(i) for i in range(3)]
    bag = tmp_path / "bag"
    assert write_bag_images(bag, "/cam", frames, storage=storage, encoding=encoding,
                            start_ns=T0, fps=10) == 3
    out = list(read_bag_images(bag, "/cam"))
    assert [t for t, _ in out] == [T0, T0 + 100_000_000, T0 + 200_000_000]
    for (_, got), want in zip(out, frames, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip_mono(tmp_path: Path, storage: str) -> None:
    gray = [_rgb(i)[:, :, 0] for i in range(2)]
    write_bag_images(tmp_path / "m8", "cam", gray, storage=storage, encoding="mono8")
    for (_, got), want in zip(read_bag_images(tmp_path / "m8", "cam"), gray, strict=True):
        assert np.array_equal(got, np.repeat(want[:, :, None], 3, axis=2))
    deep = [np.array([[0, 255, 256, 65535], [4660, 512, 1, 40000]], np.uint16)]
    for big in (False, True):
        bag = tmp_path / f"m16_{big}"
        write_bag_images(bag, "cam", deep, storage=storage, encoding="mono16", is_bigendian=big)
        (_, got), = read_bag_images(bag, "cam")
        assert np.array_equal(got[:, :, 2], (deep[0] >> 8).astype(np.uint8))


def test_mono16_endianness_hand_computed() -> None:
    data = bytes([0x01, 0x02])
    assert image_from_msg_fields("mono16", 1, 1, 2, 1, data)[0, 0, 0] == 0x01
    assert image_from_msg_fields("mono16", 1, 1, 2, 0, data)[0, 0, 0] == 0x02


def test_step_padding() -> None:
    # 2x2 rgb8 with 2 padding bytes per row (step 8): padding must be ignored.
    data = bytes([1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 99, 99])
    out = image_from_msg_fields("rgb8", 2, 2, 8, 0, data)
    assert out.reshape(-1).tolist() == list(range(1, 13))
    fields = image_to_msg_fields(_rgb(4), "bgr8", row_padding=3)
    assert fields["step"] == 5 * 3 + 3
    assert np.array_equal(image_from_msg_fields(**fields), _rgb(4))


def test_bag_step_padding_and_compressed(tmp_path: Path) -> None:
    bag = tmp_path / "pad"
    with BagWriter(bag, storage="sqlite3") as w:
        w.write_image("/cam", _rgb(5), T0, encoding="bgra8", row_padding=7)
    (_, got), = read_bag_images(bag, "/cam")
    assert np.array_equal(got, _rgb(5))
    frames = [_rgb(i, 16, 16) for i in range(2)]
    write_bag_images(tmp_path / "png", "/c", frames, compressed=True, storage="sqlite3")
    assert list_image_topics(tmp_path / "png") == {"/c": "sensor_msgs/msg/CompressedImage"}
    for (_, got), want in zip(read_bag_images(tmp_path / "png", "/c"), frames, strict=True):
        assert np.array_equal(got, want)
    smooth = [np.full((16, 16, 3), (200, 100, 50), np.uint8)]
    write_bag_images(tmp_path / "jpg", "/c", smooth, compressed=True, compressed_format="jpeg")
    (_, got), = read_bag_images(tmp_path / "jpg", "/c")
    assert np.abs(got.astype(int) - smooth[0]).max() < 8


def test_bag_errors(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="not found"):
        read_bag_images(tmp_path / "missing", "/cam")
    (tmp_path / "notabag").mkdir()
    with pytest.raises(BagError, match="not a readable ROS 2 bag"):
        read_bag_images(tmp_path / "notabag", "/cam")
    bag = tmp_path / "two"
    with BagWriter(bag) as w:
        w.write_image("/front/image", _rgb(0), T0)
        w.write_compressed("/rear/image/compressed", _rgb(1), T0)
        w.write_msg("/chatter", TYPESTORE.types["std_msgs/msg/String"](data="hi"), T0)
        w.add_topic("/idle", IMAGE_MSGTYPE)
    with pytest.raises(BagError, match="/front/image, /idle, /rear/image/compressed"):
        read_bag_images(bag, "/wrong")
    with pytest.raises(BagError, match="std_msgs/msg/String"):
        read_bag_images(bag, "/chatter")
    with pytest.raises(BagError, match="zero frames"):
        read_bag_images(bag, "/idle")
    with pytest.raises(BagError, match="already exists"):
        BagWriter(bag)


def test_bad_frames_skipped_and_counted(tmp_path: Path) -> None:
    bag = tmp_path / "bad"
    good = TYPESTORE.serialize_cdr(
        make_image_msg(image_to_msg_fields(_rgb(0)), T0), IMAGE_MSGTYPE)
    short = image_to_msg_fields(_rgb(1))
    short["data"] = short["data"][:-10]
    odd = image_to_msg_fields(_rgb(2))
    odd["encoding"] = "yuv422_weird"
    with BagWriter(bag) as w:
        w.write_image("/cam", _rgb(0), T0)
        w.write_raw("/cam", IMAGE_MSGTYPE, T0 + 1, bytes(good[: len(good) // 2]))
        w.write_msg("/cam", make_image_msg(short, T0 + 2), T0 + 2)
        w.write_msg("/cam", make_image_msg(odd, T0 + 3), T0 + 3)
        w.write_image("/cam", _rgb(4), T0 + 4)
    reader = read_bag_images(bag, "/cam")
    frames = list(reader)
    assert [t for t, _ in frames] == [T0, T0 + 4]
    assert np.array_equal(frames[1][1], _rgb(4))
    assert reader.skipped == 3 and reader.read == 2
    assert len(list(read_bag_images(bag, "/cam", max_frames=1))) == 1
    only_bad = tmp_path / "only_bad"
    with BagWriter(only_bad) as w:
        w.write_raw("/cam", IMAGE_MSGTYPE, T0, b"\x00\x01\x00\x00")
    with pytest.raises(BagError, match="no decodable frames"):
        list(read_bag_images(only_bad, "/cam"))


# --------------------------------------------------------------------------- layout


def _dataset(root: Path, *, masks: dict[str, np.ndarray] | None = None) -> Path:
    for name in ("baseline", "reference"):
        _write_png(root / name / "0.png", _rgb(0))
    for stem, mask in (masks or {}).items():
        _write_png(root / "test" / "images" / f"{stem}.png", _rgb(1))
        (root / "test" / "masks").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "test" / "masks" / f"{stem}.png"), mask)
    return root


def test_layout_discover(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [2, 2]], np.uint8)
    root = _dataset(tmp_path / "d", masks={"a": mask, "b": mask})
    lay = DatasetLayout.discover(root)
    assert lay.baseline == root / "baseline" and lay.empty is None and lay.labels_csv is None
    assert [stem for stem, _, _ in test_pairs(lay)] == ["a", "b"]
    assert np.array_equal(read_mask(root / "test" / "masks" / "a.png"), mask)
    (root / "test" / "masks" / "b.png").unlink()
    with pytest.raises(LayoutError, match="no mask.*b"):
        test_pairs(lay)


def test_layout_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="expected dataset layout"):
        DatasetLayout.discover(tmp_path / "none")
    _write_png(tmp_path / "d" / "baseline" / "0.png", _rgb(0))
    with pytest.raises(LayoutError, match="reference(.|\n)*baseline/\\*.png"):
        DatasetLayout.discover(tmp_path / "d")
    (tmp_path / "d" / "reference").mkdir()
    with pytest.raises(LayoutError, match="holds no images"):
        DatasetLayout.discover(tmp_path / "d")
    with pytest.raises(LayoutError, match="no test/images"):
        test_pairs(DatasetLayout(tmp_path, tmp_path, tmp_path))


@pytest.mark.parametrize("text, match", [
    ("name,label\na,0\n", ":1: header"),
    ("stem,label\na,0\nb,2\n", ":3: label must be 0 or 1"),
    ("stem,label\na,0\na,1\n", ":3: duplicate stem 'a'"),
    ("stem,label\na,0,1\n", ":2: expected 2 columns"),
    ("stem,label\n,1\n", ":2: empty stem"),
])
def test_labels_csv_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LayoutError, match=match):
        read_labels_csv(path)


def test_labels_csv_ok(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("stem,label\n a , 1\n\nb,0\n")
    assert read_labels_csv(path) == {"a": 1, "b": 0}


def test_mask_with_bad_values_rejected(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.array([[0, 1], [2, 3]], np.uint8))
    with pytest.raises(LayoutError, match=r"m\.png.*3"):
        read_mask(path)


# --------------------------------------------------------------------------- synth

SMALL = {"width": 192, "height": 112, "n_baseline": 3, "n_reference": 2, "n_empty": 1,
         "n_test": 4}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("preset", ["steel", "plants"])
def test_generate_deterministic_and_consistent(tmp_path: Path, preset: str) -> None:
    lay = generate(preset, tmp_path / "a", seed=3, **SMALL)
    generate(preset, tmp_path / "b", seed=3, **SMALL)
    generate(preset, tmp_path / "c", seed=4, **SMALL)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a["baseline/00000.png"] != c["baseline/00000.png"]
    assert len(list_images(lay.baseline)) == 3 and len(list_images(lay.empty)) == 1
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["preset"] == preset and meta["seed"] == 3 and meta["counts"]["test"] == 4
    labels = read_labels_csv(lay.labels_csv)
    for stem, image, mask_path in test_pairs(lay):
        mask = read_mask(mask_path)
        assert mask.shape == read_image(image).shape[:2] == (112, 192)
        assert labels[stem] == int((mask == 2).any())
    assert sum(labels.values()) == 2  # half the test images carry anomalies
    with pytest.raises(FileExistsError):
        generate(preset, tmp_path / "a", seed=3, **SMALL)


@pytest.mark.parametrize("preset", ["steel", "plants"])
def test_render_scene_labels_and_instances(preset: str) -> None:
    rng = np.random.default_rng(0)
    rgb, labels, inst = render_scene(preset, rng, 256, 160, n_targets=5, n_anomalies=3)
    assert rgb.shape == (160, 256, 3) and rgb.dtype == np.uint8
    assert labels.dtype == np.uint8 and inst.dtype == np.int32
    assert set(np.unique(labels)) <= {0, 1, 2} and {1, 2} <= set(np.unique(labels))
    assert np.array_equal(labels == 0, inst == 0)
    for k in np.unique(inst[inst > 0]):
        assert len(np.unique(labels[inst == k])) == 1
    assert inst.max() <= 8
    _, ref_labels, _ = render_scene(preset, rng, 256, 160, n_targets=8, n_anomalies=0)
    assert 2 not in ref_labels and 1 in ref_labels
    _, empty_labels, _ = render_scene(preset, rng, 256, 160, n_targets=0, n_anomalies=0)
    assert not empty_labels.any()


def test_steel_anomalies_are_redder() -> None:
    rng = np.random.default_rng(1)
    reds = {1: [], 2: []}
    for _ in range(3):
        rgb, labels, _ = render_scene("steel", rng, 320, 192, n_targets=5, n_anomalies=5)
        for cls in (1, 2):
            px = rgb[labels == cls].astype(float)
            reds[cls].append(px[:, 0].mean() - px[:, 2].mean())
    assert min(reds[2]) > max(reds[1]) + 30
