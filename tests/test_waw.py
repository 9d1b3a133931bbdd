"""WaW (the second method): hypersphere, popularity and vote on hand-made 2-D features, ExG on
a hand-made image, and `pasta calibrate --method waw` / evaluate / segment on a tiny plants set,
with the user errors (exit 2, one `error:` line naming the fix)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pasta_ros.core import waw
from pasta_ros.core.errors import CalibrationError, ImageError, ModelError
from pasta_ros.core.exg import excess_green, exg_instances, point_prompts
from pasta_ros.core.model_io import load_model, save_model
from pasta_ros.core.object_embed import masked_crops, pool_masked

SQUARE = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
SIZE = "224x128"
FAST = ["--input-size", SIZE, "--device", "cpu", "--backend", "torch"]
TINY_WAW = ["--waw-k-sphere", "3", "--waw-k-v", "3"]


def test_hypersphere_radius_is_the_distance_to_the_kth_other_reference():
    idx = np.arange(4)
    np.testing.assert_allclose(waw.hypersphere_radii(SQUARE, SQUARE, idx, 1), [1, 1, 1, 1])
    np.testing.assert_allclose(waw.hypersphere_radii(SQUARE, SQUARE, idx, 3), [2**0.5] * 4,
                               rtol=1e-6)


def test_vote_inside_the_spheres_is_target_far_away_is_anomaly():
    radii = np.ones(4, np.float32)  # k_sphere = 1
    queries = np.array([[0.5, 0.5], [3, 3], [1.9, 1.0]], np.float32)
    anomalous, share = waw.vote(queries, SQUARE, radii, 2, 0.5)
    # (1.9, 1): inside the sphere of (1, 1) (0.9), outside that of (1, 0) (1.35): share 1/2
    np.testing.assert_allclose(share, [1.0, 0.0, 0.5])
    assert anomalous.tolist() == [False, True, False]
    assert waw.vote(queries, SQUARE, radii, 2, 0.6)[0].tolist() == [False, True, True]


def test_popularity_voting_drops_a_reference_outlier_from_the_bag():
    reference = np.concatenate([SQUARE, [[10.0, 10.0]]]).astype(np.float32)
    baseline = np.array([[0.1, 0.1], [0.9, 0.9], [0.2, 0.8], [8.0, -8.0]], np.float32)
    votes = waw.popularity(reference, baseline, 2)
    assert votes[4] == 0 and (votes[:4] > 0).all()
    bag, radii, _ = waw.target_bag(reference, baseline, k_sphere=1, k_v=2, min_votes=1)
    np.testing.assert_array_equal(bag, SQUARE)
    np.testing.assert_allclose(radii, 1.0)


def test_k_sphere_above_the_reference_count_names_the_fix():
    with pytest.raises(CalibrationError, match="--waw-k-sphere 3 or less"):
        waw.target_bag(SQUARE, SQUARE, k_sphere=4, k_v=2, min_votes=1)


def test_exg_of_grey_and_green_pixels_and_two_plants_become_two_instances():
    img = np.full((60, 100, 3), 100, np.uint8)
    img[10:40, 10:40] = (50, 150, 50)   # r, g, b = .2, .6, .2 -> ExG 0.8
    img[20:50, 60:90] = (40, 120, 40)
    exg = excess_green(img)
    assert exg[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert exg[20, 20] == pytest.approx(0.8, abs=1e-6)
    ids = exg_instances(img, threshold=0.1, spacing=40, min_area=50)
    assert ids.max() == 2
    assert sorted(np.bincount(ids.ravel())[1:].tolist()) == [900, 900]
    assert len(point_prompts(ids > 0, 40)) == 2


def test_exg_on_a_grayscale_image_is_an_image_error():
    gray = np.repeat(np.arange(60, dtype=np.uint8).reshape(6, 10, 1), 3, axis=2)
    with pytest.raises(ImageError, match="grayscale"):
        excess_green(gray)


def test_masked_crops_keep_only_the_object_and_pool_over_its_cells():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:] = (200, 10, 10)
    ids = np.zeros((40, 40), np.int32)
    ids[10:30, 10:30] = 1
    crops, masks = masked_crops(img, ids, 32, pad=0.5)
    assert crops.shape == (1, 32, 32, 3) and masks[0, 16, 16] and not masks[0, 0, 0]
    assert tuple(crops[0, 0, 0]) == (124, 116, 104) and tuple(crops[0, 16, 16]) == (200, 10, 10)
    import torch
    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 0, 1:3, 1:3] = 1.0  # the object's cells point along channel 0, the rest along 1
    feats[0, 1] = 1.0
    feats[0, 1, 1:3, 1:3] = 0.0
    np.testing.assert_allclose(pool_masked(feats, masks), [[1.0, 0.0]], atol=1e-6)


@pytest.fixture(scope="module")
def tiny_plants(tmp_path_factory):
    from pasta_ros.data.synth import generate

    return generate("plants", tmp_path_factory.mktemp("tiny_plants"), seed=0, width=224,
                    height=128, n_baseline=8, n_reference=6, n_empty=2, n_test=4)


@pytest.fixture(scope="module")
def waw_model(tiny_plants, tmp_path_factory) -> Path:
    from conftest import cli_main

    out = tmp_path_factory.mktemp("waw") / "model"
    code, stdout, err = cli_main(["-q", "calibrate", "--method", "waw", "--baseline",
                                  tiny_plants.baseline, "--reference", tiny_plants.reference,
                                  "--out", out, *FAST, *TINY_WAW])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["extracted_features"] == (summary["baseline_features"]
                                            + summary["reference_features"]) > 0
    return out


def test_the_model_records_its_method_and_round_trips(waw_model: Path, tmp_path: Path):
    manifest = json.loads((waw_model / "manifest.json").read_text())
    assert manifest["method"] == "waw" and manifest["model_id"].startswith("waw-")
    assert manifest["method_params"]["waw_k_sphere"] == 3
    model = load_model(waw_model)
    bag, radii = model.method_arrays["bag"], model.method_arrays["radii"]
    assert bag.shape == (radii.shape[0], model.channels) and (radii > 0).all()
    save_model(model, tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    np.testing.assert_array_equal(again.method_arrays["bag"], bag)
    manifest["method"] = "nope"
    (tmp_path / "copy" / "manifest.json").write_text(json.dumps(manifest))
    from pasta_ros.pipeline import PastaPipeline

    with pytest.raises(ModelError, match="method 'nope'"):
        PastaPipeline.load(tmp_path / "copy")


def test_evaluate_and_segment_run_the_waw_model(run_cli, waw_model, tiny_plants, tmp_path):
    code, stdout, err = run_cli(["-q", "evaluate", "--model", waw_model, "--test",
                                 tiny_plants.root, "--backend", "torch", "--device", "cpu"])
    assert code == 0, err
    result = json.loads(stdout)
    assert result["model_id"].startswith("waw-") and result["iou_background"] > 50
    assert result["iou_target"] > 0, "ExG finds the plants"
    code, stdout, err = run_cli(["-q", "segment", "--model", waw_model, "--images",
                                 tiny_plants.test_images, "--out", tmp_path / "seg",
                                 "--backend", "torch", "--device", "cpu"])
    assert code == 0, err
    labels = cv2.imread(str(next((tmp_path / "seg" / "labels").glob("*.png"))), 0)
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any()


def test_the_pipeline_runs_the_method_the_model_holds(waw_model, tiny_plants):
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.data.images import read_image
    from pasta_ros.pipeline import PastaPipeline

    pipe = PastaPipeline.load(waw_model, PastaConfig(backend="torch", device="cpu"))
    image = read_image(next(iter(sorted(tiny_plants.test_images.iterdir()))))
    result = pipe.process(image)
    assert result.vote == "waw" and result.labels.shape == image.shape[:2]
    assert result.anomaly_patches.shape == result.cluster_map.shape
    gray = np.repeat(image.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    with pytest.raises(ImageError, match="grayscale"):
        pipe.process(gray)


def _gray_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        cv2.imwrite(str(dst / (p.stem + ".png")), cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))
    return dst


@pytest.mark.parametrize("case", ["k_sphere", "no_objects", "grayscale"])
def test_bad_waw_input_exits_2_naming_the_fix(run_cli, tiny_plants, tiny_steel, tmp_path,
                                              case):
    sets, extra, message = (tiny_plants.baseline, tiny_plants.reference), TINY_WAW, ""
    if case == "k_sphere":
        extra, message = ["--waw-k-sphere", "500"], "--waw-k-sphere"
    elif case == "no_objects":  # steel is not green: ExG finds nothing
        sets, message = (tiny_steel.baseline, tiny_steel.reference), "--waw-masks segmenter"
    else:
        sets = (_gray_copy(tiny_plants.baseline, tmp_path / "b"),
                _gray_copy(tiny_plants.reference, tmp_path / "r"))
        message = "grayscale"
    code, stdout, err = run_cli(["-q", "calibrate", "--method", "waw", "--baseline", sets[0],
                                 "--reference", sets[1], "--out", tmp_path / "m", *FAST,
                                 *extra])
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_segmenter_route_calibrates_on_steel(run_cli, tiny_steel, tmp_path):
    code, stdout, err = run_cli(["-q", "calibrate", "--method", "waw", "--waw-masks",
                                 "segmenter", "--baseline", tiny_steel.baseline, "--reference",
                                 tiny_steel.reference, "--empty", tiny_steel.empty, "--out",
                                 tmp_path / "m", "--clusters", "8", *FAST, "--waw-k-v", "3",
                                 "--waw-k-sphere", "14"])  # wide: 4 tiny reference images give 15
    assert code == 0, err
    model = load_model(tmp_path / "m")
    assert model.method_params["waw_masks"] == "segmenter" and model.background.any()
    code, stdout, err = run_cli(["-q", "evaluate", "--model", tmp_path / "m", "--test",
                                 tiny_steel.root, "--backend", "torch", "--device", "cpu"])
    assert code == 0, err
    assert json.loads(stdout)["iou_target"] > 10


def test_recalibration_keeps_the_running_models_method_and_settings(waw_model):
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.ros.recalibration import Request, recalibration_config

    cfg = recalibration_config(PastaConfig(), load_model(waw_model),
                               Request("b.mcap", "r.mcap", "", "/image", clusters=12))
    assert (cfg.method, cfg.waw_k_sphere, cfg.waw_k_v, cfg.clusters) == ("waw", 3, 3, 12)
