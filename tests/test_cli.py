"""Every `pasta` command once, on tiny sets; user errors exit 2 with one `error:` line."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from pasta_ros.core.config import PastaConfig
from pasta_ros.data.bags import write_bag_images
from pasta_ros.data.layout import DatasetLayout, read_mask
from pasta_ros.sources import folder_source

TINY_SIZE, TINY_K = (224, 128), 8  # as the conftest fixtures tiny_steel and tiny_model
SIZE = f"{TINY_SIZE[0]}x{TINY_SIZE[1]}"
TOPIC = "/camera/image_raw"
T0 = 1_700_000_000_000_000_000
METRICS = ("iou_background", "iou_target", "iou_anomaly", "miou", "patch_iou_anomaly", "auroc")


def json_from_stdout(stdout: str) -> dict:
    """The JSON object the CLI prints last (a table printed before it is skipped)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


def frames(folder: Path) -> list[np.ndarray]:
    return [img for _, img in folder_source(folder)()]


def check_model_dir(d: Path, n_overlays: int) -> None:
    assert (d / "manifest.json").is_file() and (d / "arrays.npz").is_file()
    assert (d / "report" / "cluster_distributions.png").is_file()
    overlays = sorted((d / "report").glob("clusters_*.png"))
    assert len(overlays) == n_overlays
    assert cv2.imread(str(overlays[0])).shape[:2] == (TINY_SIZE[1], TINY_SIZE[0])


def check_segment_output(out: Path, names: Sequence[str]) -> list[dict]:
    """labels/, overlays/ and instances.json of `pasta segment`; returns the instances."""
    for name in names:
        labels = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (TINY_SIZE[1], TINY_SIZE[0]) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2}
        overlay = cv2.imread(str(out / "overlays" / f"{name}.png"))
        assert overlay.shape == (TINY_SIZE[1], TINY_SIZE[0], 3)
    summary = json.loads((out / "instances.json").read_text())
    assert [s["image"] for s in summary] == list(names)
    instances = [i for s in summary for i in s["instances"]]
    for inst in instances:
        x, y, w, h = inst["bbox"]
        assert w > 0 and h > 0 and 0 < inst["area"] <= w * h
        assert x <= inst["centroid"][0] <= x + w and y <= inst["centroid"][1] <= y + h
        assert inst["class"] in ("target", "anomaly")
    return instances


@pytest.fixture(scope="module")
def bags(tiny_steel: DatasetLayout, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """5 baseline and 3 reference frames as mcap bags, the 4 test images as a sqlite3 bag."""
    root = tmp_path_factory.mktemp("bags")
    out = {}
    for name, folder, n, storage in (("baseline", tiny_steel.baseline, 5, "mcap"),
                                     ("reference", tiny_steel.reference, 3, "mcap"),
                                     ("test", tiny_steel.test_images, 4, "sqlite3")):
        out[name] = root / name
        written = write_bag_images(out[name], TOPIC, frames(folder)[:n], storage=storage,
                                   start_ns=T0)
        assert written == n
    return out


# --------------------------------------------------------------------------- synth


@pytest.mark.parametrize("preset", ["steel", "plants"])
def test_synth(run_cli, tmp_path: Path, preset: str) -> None:
    code, stdout, stderr = run_cli(["-q", "synth", "--preset", preset, "--out", tmp_path / "d",
                                    "--size", "96x64", "--n-baseline", "2", "--n-reference", "1",
                                    "--n-empty", "1", "--n-test", "2", "--seed", "3"])
    assert code == 0, stderr
    assert json.loads(stdout) == {"dataset": str(tmp_path / "d"), "preset": preset, "seed": 3}
    layout = DatasetLayout.discover(tmp_path / "d")
    counts = {"baseline": 2, "reference": 1, "empty": 1}
    for name, n in counts.items():
        images = frames(getattr(layout, name))
        assert len(images) == n and all(i.shape == (64, 96, 3) for i in images)
    masks = sorted(layout.test_masks.iterdir())
    assert len(masks) == 2 and len(frames(layout.test_images)) == 2
    for m in masks:
        mask = read_mask(m)
        assert mask.shape == (64, 96) and set(np.unique(mask)) <= {0, 1, 2}
    assert layout.labels_csv is not None
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["preset"] == preset


# --------------------------------------------------------------------------- calibrate


def test_calibrate_from_folders(tiny_model: Path) -> None:
    check_model_dir(tiny_model, n_overlays=4)
    m = json.loads((tiny_model / "manifest.json").read_text())
    assert m["input_size"] == list(TINY_SIZE) and m["background_source"] == "empty"
    stats = m["stats"]
    assert stats["baseline_images"] == 8 and stats["reference_images"] == 4
    assert stats["empty_images"] == 2 and stats["skipped_images"] == 0
    # the centres: the kept background clusters, K object clusters, split_parts - 1 more per
    # split
    parts = PastaConfig().split_parts
    assert stats["object_clusters"] == TINY_K + (parts - 1) * stats["split_clusters"]
    assert m["clusters"] == stats["object_clusters"] + stats["background_clusters"] \
        == len(m["p_baseline"])
    assert len(m["background_clusters"]) == stats["background_clusters"] > 0


def test_calibrate_from_bags(run_cli, bags, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, stdout, stderr = run_cli([
        "-q", "calibrate", "--baseline", bags["baseline"], "--reference", bags["reference"],
        "--topic", TOPIC, "--out", out, "--input-size", SIZE, "--clusters", "4",
        "--device", "cpu"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["baseline_images"] == 5 and result["reference_images"] == 3
    assert result["empty_images"] == 0 and result["background_source"] == "border"
    check_model_dir(out, n_overlays=4)
    # frames are named by their stamps
    assert (out / "report" / f"clusters_{T0}.png").is_file()


def test_calibrate_skips_a_corrupt_image(run_cli, tiny_steel: DatasetLayout,
                                         tmp_path: Path) -> None:
    base = tmp_path / "baseline"
    base.mkdir()
    for src in sorted(tiny_steel.baseline.iterdir())[:3]:
        (base / src.name).write_bytes(src.read_bytes())
    (base / "00099_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code, stdout, stderr = run_cli([
        "-q", "calibrate", "--baseline", base, "--reference", tiny_steel.reference,
        "--out", tmp_path / "model", "--input-size", SIZE, "--clusters", "4", "--device", "cpu"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["baseline_images"] == 3
    assert (tmp_path / "model" / "manifest.json").is_file()
    assert result["skipped_images"] == 1  # once, although the set is read in two passes


# --------------------------------------------------------------------------- segment


def test_segment_images(run_cli, tiny_model: Path, tiny_steel: DatasetLayout,
                        tmp_path: Path) -> None:
    out = tmp_path / "seg"
    code, stdout, stderr = run_cli(["-q", "segment", "--model", tiny_model, "--images",
                                    tiny_steel.test_images, "--out", out, "--device", "cpu"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["frames"] == 4 and result["skipped"] == 0 and result["ms_per_frame"] > 0
    names = [p.stem for p in sorted(tiny_steel.test_images.iterdir())]
    assert len(check_segment_output(out, names)) > 0


def test_segment_bag(run_cli, tiny_model: Path, bags, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    code, stdout, stderr = run_cli(["-q", "segment", "--model", tiny_model, "--bag",
                                    bags["test"], "--topic", TOPIC, "--out", out])
    assert code == 0, stderr
    assert json.loads(stdout)["frames"] == 4
    period = round(1e9 / 10.0)  # write_bag_images default fps
    check_segment_output(out, [str(T0 + i * period) for i in range(4)])


def test_segment_gray_rgba_and_16bit_images(run_cli, tiny_model: Path,
                                            tiny_steel: DatasetLayout, tmp_path: Path) -> None:
    bgr = cv2.imread(str(sorted(tiny_steel.test_images.iterdir())[0]))
    folder = tmp_path / "odd"
    folder.mkdir()
    variants = {"gray": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
                "rgba": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
                "sixteen": bgr.astype(np.uint16) * 257}
    for name, img in variants.items():
        assert cv2.imwrite(str(folder / f"{name}.png"), img)
    out = tmp_path / "seg"
    code, stdout, stderr = run_cli(["-q", "segment", "--model", tiny_model, "--images", folder,
                                    "--out", out])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["frames"] == 3 and result["skipped"] == 0
    check_segment_output(out, sorted(variants))
    # 16-bit keeps the high byte, so it segments exactly like the 8-bit original
    sixteen = cv2.imread(str(out / "labels" / "sixteen.png"), cv2.IMREAD_UNCHANGED)
    rgba = cv2.imread(str(out / "labels" / "rgba.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sixteen, rgba)


# --------------------------------------------------------------------------- evaluate


def check_metric(name: str, value: float) -> None:
    assert math.isnan(value) or 0.0 <= value <= 100.0, (name, value)


def test_evaluate_model(run_cli, tiny_model: Path, tiny_steel: DatasetLayout,
                        tmp_path: Path) -> None:
    code, stdout, stderr = run_cli(["-q", "evaluate", "--model", tiny_model, "--test",
                                    tiny_steel.root, "--json", tmp_path / "m.json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["images"] == 4 and result["model_id"]
    for name in METRICS:
        check_metric(name, result[name])
    assert result["ms_per_image"] > 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["model_id"] == result["model_id"]


def test_evaluate_grid(run_cli, tiny_steel: DatasetLayout, tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    code, stdout, stderr = run_cli([
        "-q", "evaluate", "--data", tiny_steel.root, "--seeds", "0,1", "--clusters", TINY_K,
        "--input-size", SIZE, "--device", "cpu", "--json", path])
    assert code == 0, stderr
    result = json.loads(path.read_text())
    assert [(r["seed"], r["clusters"]) for r in result["runs"]] == [(0, TINY_K), (1, TINY_K)]
    assert result["config"]["empty_set"] is True
    summary = result["summary"][str(TINY_K)]
    assert "ms_per_image" not in summary  # cached features: not a frame latency
    assert all("ms_per_image" not in r for r in result["runs"])
    for name in METRICS:
        mean, std = summary[name]["mean"], summary[name]["std"]
        check_metric(name, mean)
        values = [r[name] for r in result["runs"] if not math.isnan(r[name])]
        if values:
            assert mean == pytest.approx(np.mean(values), abs=1e-3)
            assert std == pytest.approx(np.std(values), abs=1e-3) and std >= 0
    printed = json_from_stdout(stdout)[str(TINY_K)]  # stdout holds the summary only
    assert printed.keys() == summary.keys()
    assert printed["miou"]["mean"] == pytest.approx(summary["miou"]["mean"], nan_ok=True)


# --------------------------------------------------------------------------- bench


def test_bench_fusion(run_cli, tmp_path: Path) -> None:
    code, stdout, stderr = run_cli(["-q", "bench", "fusion", "--repeats", "2",
                                    "--json", tmp_path / "b.json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["outputs_equal"] is True
    assert result["ours_ms"] > 0 and result["reference_ms"] > 0
    assert json.loads((tmp_path / "b.json").read_text())["outputs_equal"] is True


def test_bench_frame_with_the_icas_vote(run_cli) -> None:
    """The whole frame at 910x512 with the shipped iCAS checkpoint: every stage is timed."""
    code, stdout, stderr = run_cli(["-q", "bench", "frame", "--repeats", "1", "--icas",
                                    "combine"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["icas"] == "combine" and result["network_input"] == "912x512"
    for side in ("default", "reference"):  # the default pipeline and torch eager, same frames
        stages = result[side]
        assert {"preprocess", "backbone", "assign", "icas", "segment", "fusion"} <= stages.keys()
        assert all(v >= 0 for v in stages.values())
        assert stages["total"] >= stages["backbone"] + stages["icas"]
    assert result["speedup"] > 0 and 0 <= result["labels_agree_pct"] <= 100


# --------------------------------------------------------------------------- user errors


def error_cases(steel: DatasetLayout, model: Path, bags: dict[str, Path], tmp: Path
                ) -> dict[str, tuple[list, str]]:
    """name -> (argv, regex the single error line must match)."""
    empty = tmp / "empty_folder"
    empty.mkdir()
    two = tmp / "two_images"
    two.mkdir()
    for src in sorted(steel.baseline.iterdir())[:2]:
        (two / src.name).write_bytes(src.read_bytes())
    cal = ["calibrate", "--reference", steel.reference, "--input-size", SIZE,
           "--device", "cpu"]
    return {
        "missing baseline": ([*cal, "--baseline", tmp / "nope", "--out", tmp / "m1"],
                             "nope does not exist"),
        "empty baseline": ([*cal, "--baseline", empty, "--out", tmp / "m2"],
                           "baseline set is empty"),
        "one cluster": ([*cal, "--baseline", steel.baseline, "--out", tmp / "m3",
                         "--clusters", "1"], r"clusters: 1 is outside \[2, 1024\]"),
        "unknown backbone": ([*cal, "--baseline", steel.baseline, "--out", tmp / "m4",
                              "--backbone", "resnet50"], "backbone: 'resnet50' is not one of"),
        "no weights": ([*cal, "--baseline", steel.baseline, "--out", tmp / "m5",
                        "--backbone", "dinov2_vits14"], "dinov2_vits14 needs --weights"),
        "fewer patches than K": ([*cal, "--baseline", two, "--out", tmp / "m6",
                                  "--clusters", "1000"], "only 896 patches for K=1000"),
        "not a model": (["segment", "--model", steel.root, "--images", steel.test_images,
                         "--out", tmp / "s1"], "is not a PASTA model"),
        "wrong topic": (["segment", "--model", model, "--bag", bags["test"], "--topic",
                         "/camera/wrong", "--out", tmp / "s2"],
                        f"'/camera/wrong' is not in bag .*image topics in the bag: {TOPIC}$"),
    }


@pytest.fixture(scope="module")
def errors(tiny_steel, tiny_model, bags, tmp_path_factory) -> dict[str, tuple[list, str]]:
    return error_cases(tiny_steel, tiny_model, bags, tmp_path_factory.mktemp("errors"))


def check_error(code: int, stdout: str, stderr: str, pattern: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert stdout == ""
    assert re.search(pattern, lines[0]), lines[0]


ERROR_CASES = ["missing baseline", "empty baseline", "one cluster", "unknown backbone",
               "no weights", "fewer patches than K", "not a model", "wrong topic"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_user_error_exits_2_with_one_line(run_cli, errors, case: str) -> None:
    argv, pattern = errors[case]
    check_error(*run_cli(["-q", *argv]), pattern)


# A fresh interpreter costs ~3 s of CPU (torch import), so only two cases are repeated
# through `python -m`: one raised before any work, one raised after the backbone ran.
@pytest.mark.parametrize("cases", [("not a model", "fewer patches than K")])
def test_user_errors_in_a_fresh_process(errors, cases: tuple[str, ...]) -> None:
    procs = {name: subprocess.Popen([sys.executable, "-m", "pasta_ros.cli", "-q",
                                     *map(str, errors[name][0])], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in cases}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        check_error(proc.returncode, stdout, stderr, errors[name][1])


def test_in_process_usage_errors(run_cli, tiny_model: Path, bags, tiny_steel, tmp_path) -> None:
    """Cheap mistakes that need no fresh process: each is one error line and status 2."""
    cases = {
        "evaluate needs either": ["evaluate"],
        "--bag needs --topic": ["segment", "--model", tiny_model, "--bag", bags["test"],
                                "--out", tmp_path / "s"],
        "is a ROS 2 bag: give the image topic": [
            "calibrate", "--baseline", bags["baseline"], "--reference", tiny_steel.reference,
            "--out", tmp_path / "m"],
        "input size 224x128 but 320x128": [
            "segment", "--model", tiny_model, "--images", tiny_steel.test_images,
            "--input-size", "320x128", "--out", tmp_path / "s"],
    }
    for message, argv in cases.items():
        code, stdout, stderr = run_cli(["-q", *argv])
        assert code == 2 and stdout == "", (argv, stderr)
        assert stderr.startswith("error: ") and message in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1
