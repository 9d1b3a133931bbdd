"""Issue 9 data: conveyor presets with exact masks, instance GT, evaluation on what users
have (labels only, the test folder itself), and bad input as one error line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pasta_ros.data import synth
from pasta_ros.data.layout import DatasetLayout, read_mask, write_labels_csv
from pasta_ros.data.synth_conveyor import CONVEYOR_PRESETS, touching_share

SIZE = (224, 128)


@pytest.mark.parametrize("preset", sorted(CONVEYOR_PRESETS))
def test_every_conveyor_preset_has_masks_equal_to_the_pasted_objects(monkeypatch, preset):
    pasted = []
    real_blend = synth.blend

    def recording_blend(img, rgb, alpha, x0, y0):
        pasted.append((alpha >= 0.5, x0, y0))
        real_blend(img, rgb, alpha, x0, y0)

    monkeypatch.setattr(synth, "blend", recording_blend)
    rng = np.random.default_rng([3, 1])
    rgb, labels, instances = synth.render_scene(preset, rng, 320, 192, 6, 3)
    expected = np.zeros_like(instances)
    for k, (mask, x0, y0) in enumerate(pasted, start=1):  # later objects occlude earlier
        box = synth.clip_box(expected.shape, x0, y0, *mask.shape)
        if box is not None:
            (iy, ix), (py, px) = box
            expected[iy, ix][mask[py, px]] = k
    assert len(pasted) > 0
    np.testing.assert_array_equal(instances, expected)
    np.testing.assert_array_equal(labels > 0, instances > 0)
    for i in np.unique(instances[instances > 0]):  # one class per instance
        assert len(np.unique(labels[instances == i])) == 1
    assert rgb.shape == (192, 320, 3) and rgb.dtype == np.uint8


def test_generate_writes_uint16_instances_and_the_touching_share(tmp_path: Path):
    lay = synth.generate("belt_dense_dev", tmp_path / "d", seed=0, width=SIZE[0],
                         height=SIZE[1], n_baseline=2, n_reference=1, n_empty=1, n_test=3)
    assert lay.test_instances is not None
    for stem in ("00000", "00001", "00002"):
        ids = cv2.imread(str(lay.test_instances / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16
        np.testing.assert_array_equal(ids > 0, read_mask(lay.test_masks / f"{stem}.png") > 0)
    meta = json.loads((lay.root / "meta.json").read_text())
    assert meta["options"]["touch"] == CONVEYOR_PRESETS["belt_dense_dev"].touch
    assert 0 <= meta["touching_objects_test"] <= meta["objects_test"]


def test_touching_share_counts_objects_that_touch():
    ids = np.zeros((10, 20), np.int32)
    ids[2:5, 2:5] = 1
    ids[2:5, 5:8] = 2   # touches 1
    ids[2:5, 12:15] = 3  # alone
    assert touching_share(ids) == (2, 3)


def test_touch_option_raises_the_share_of_touching_objects(tmp_path: Path):
    rng_counts = []
    for touch in (0.0, 1.0):
        lay = synth.generate("belt_dense_dev", tmp_path / f"t{touch}", seed=1, width=320,
                             height=192, n_baseline=1, n_reference=1, n_empty=0, n_test=6,
                             touch=touch)
        meta = json.loads((lay.root / "meta.json").read_text())
        rng_counts.append(meta["touching_objects_test"] / meta["objects_test"])
    assert rng_counts[1] > rng_counts[0] + 0.2


def test_options_are_refused_for_the_issue2_presets(tmp_path: Path):
    with pytest.raises(ValueError, match="conveyor presets"):
        synth.generate("steel", tmp_path / "s", touch=0.5)


def _labels_only(tiny_steel: DatasetLayout, tmp_path: Path) -> Path:
    test = tmp_path / "only_labels" / "test"
    (test / "images").mkdir(parents=True)
    labels = {}
    for img in sorted(tiny_steel.test_images.iterdir()):
        (test / "images" / img.name).write_bytes(img.read_bytes())
        labels[img.stem] = int((read_mask(tiny_steel.test_masks / img.name) == 2).any())
    write_labels_csv(test / "labels.csv", labels)
    return test


def test_labels_only_test_set_gives_the_auroc_and_says_ious_need_masks(
        run_cli, tiny_model: Path, tiny_steel: DatasetLayout, tmp_path: Path):
    test = _labels_only(tiny_steel, tmp_path)
    for given in (test, test.parent):  # the test folder itself, or the dataset root
        code, stdout, stderr = run_cli(["-q", "evaluate", "--model", tiny_model, "--test",
                                        given])
        assert code == 0, stderr
        result = json.loads(stdout)
        assert result["images"] == 4
        assert 0 <= result["auroc"] <= 100
        assert "iou_anomaly" not in result and "need test/masks" in result["note"]


def test_evaluate_reports_instance_metrics_from_the_test_folder(
        run_cli, tiny_model: Path, tiny_steel: DatasetLayout):
    code, stdout, stderr = run_cli(["-q", "evaluate", "--model", tiny_model, "--test",
                                    tiny_steel.root / "test"])
    assert code == 0, stderr
    result = json.loads(stdout)
    for key in ("instance_precision_anomaly", "instance_recall_anomaly", "instance_f1_anomaly",
                "instance_precision_target", "pq_anomaly", "pq_target", "sq_target",
                "rq_anomaly"):
        assert key in result
    assert result["gt_instances"] == "test/instances"


def _copy_test(tiny_steel: DatasetLayout, dst: Path) -> Path:
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        for f in (tiny_steel.root / "test" / sub).iterdir():
            (dst / sub / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("case", ["mask size", "mask values", "labels name missing images",
                                  "duplicate stems"])
def test_bad_test_sets_give_one_error_line(run_cli, tiny_model, tiny_steel, tmp_path, case):
    test = _copy_test(tiny_steel, tmp_path / "bad" / "test")
    first = sorted((test / "masks").iterdir())[0]
    if case == "mask size":
        cv2.imwrite(str(first), np.zeros((10, 10), np.uint8))
        pattern, named = "is 10x10 but image", first
    elif case == "mask values":
        cv2.imwrite(str(first), np.full((SIZE[1], SIZE[0]), 7, np.uint8))
        pattern, named = r"values outside \{0, 1, 2\}: 7", first
    elif case == "labels name missing images":
        write_labels_csv(test / "labels.csv", {"00000": 0, "nope": 1})
        pattern, named = "names 1 images that are not in", test / "labels.csv"
    else:
        img = sorted((test / "images").iterdir())[0]
        cv2.imwrite(str(img.with_suffix(".jpg")), cv2.imread(str(img)))
        pattern, named = "have the same stem", img.with_suffix(".jpg")
    code, stdout, stderr = run_cli(["-q", "evaluate", "--model", tiny_model, "--test", test])
    lines = stderr.strip().splitlines()
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert pattern.replace("\\", "") in lines[0] or __import__("re").search(pattern, lines[0])
    assert str(named) in lines[0]


def test_calibration_writes_its_self_checks(tiny_model: Path):
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    checks = manifest["stats"]["self_checks"]
    assert isinstance(checks, list)
    text = (tiny_model / "report" / "self_checks.txt").read_text()
    if checks:
        assert all(c["code"] in text and c["message"] in text for c in checks)
    else:
        assert text == "all self-checks passed\n"


def test_calibrate_has_a_flag_for_every_config_field():
    from pasta_ros.cli import build_parser
    from pasta_ros.cli.args import config_from_args
    from pasta_ros.core.config import field_specs

    ap = build_parser()
    argv = ["calibrate", "--baseline", "b", "--reference", "r", "--out", "o",
            "--color-weight", "0.5", "--no-object-codebook", "--no-split-clusters",
            "--no-instance-split", "--split-separation", "3", "--background-ratio", "0.7"]
    cfg, explicit = config_from_args(ap.parse_args(argv))
    assert (cfg.color_weight, cfg.object_codebook, cfg.split_clusters, cfg.instance_split,
            cfg.split_separation, cfg.background_ratio) == (0.5, False, False, False, 3.0, 0.7)
    sub = next(a for a in ap._actions if a.dest == "command").choices["calibrate"]
    dests = {a.dest for a in sub._actions} | {"input_width", "input_height"}  # --input-size
    assert {f.name for f in field_specs()} <= dests
