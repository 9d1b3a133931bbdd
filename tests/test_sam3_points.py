"""WaW's point-prompted instance masks: SAM 3's point decoder (``Sam3TrackerModel``) on a tiny
random checkpoint (the real transformers path), the point-segmenter registry and its ``auto``
choice, and a WaW model calibrated with SAM 3 point masks through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import ModelError, PastaError
from pasta_ros.core.exg import WatershedPoints, exg_instances, point_prompts, vegetation_mask
from pasta_ros.core.segmenters.points import build_point_segmenter, resolve_point_segmenter
from pasta_ros.core.segmenters.sam3_points import Sam3PointSegmenter, save_tiny_tracker_checkpoint

SIZE = "224x128"
FAST = ["--input-size", SIZE, "--device", "cpu", "--backend", "torch"]
TINY_WAW = ["--waw-k-sphere", "3", "--waw-k-v", "3"]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    return save_tiny_tracker_checkpoint(tmp_path_factory.mktemp("sam3_tracker_tiny"))


@pytest.fixture(scope="module")
def tiny_plants(tmp_path_factory):
    from pasta_ros.data.synth import generate

    return generate("plants", tmp_path_factory.mktemp("tiny_plants_sam"), seed=0, width=224,
                    height=128, n_baseline=8, n_reference=6, n_empty=2, n_test=4)


def _plant_frames(layout, n=4):
    from pasta_ros.data.images import read_image

    return [read_image(p) for p in sorted(layout.baseline.iterdir())[:n]]


def test_point_masks_are_disjoint_inside_the_region_and_one_encoder_pass(tracker,
                                                                         tiny_plants):
    seg = Sam3PointSegmenter.from_pretrained(tracker, min_area=40, points_per_batch=4)
    encoder_calls, decoder_calls = [], []
    seg.model.vision_encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    seg.model.mask_decoder.register_forward_hook(lambda *_: decoder_calls.append(1))
    found = 0
    for image in _plant_frames(tiny_plants):
        region = vegetation_mask(image, 0.1, 40)
        points = point_prompts(region, 24)
        encoder_calls.clear()
        decoder_calls.clear()
        ids = seg.segment_points(image, region, points)
        assert encoder_calls == [1], "the image is encoded once for all its points"
        assert len(decoder_calls) == -(-len(points) // 4), "points decoded in chunks of 4"
        assert ids.shape == region.shape and ids.dtype == np.int32
        assert not ids[~region].any(), "instances stay inside the vegetation mask"
        labels = np.unique(ids)[1:]
        assert labels.tolist() == list(range(1, len(labels) + 1)), "ids renumbered 1..N"
        assert len(labels) <= len(points)
        assert (np.bincount(ids.ravel())[1:] >= 40).all(), "min_area holds"
        np.testing.assert_array_equal(ids, seg.segment_points(image, region, points))
        found += len(labels)
    assert found > 0, "the random checkpoint still finds some instances on 4 frames"


def test_no_points_give_no_instances_and_points_are_scaled_to_the_model_input(tracker):
    seg = Sam3PointSegmenter.from_pretrained(tracker)
    image = np.zeros((50, 200, 3), np.uint8)
    region = np.ones((50, 200), bool)
    assert not seg.segment_points(image, region, np.zeros((0, 2), np.int64)).any()
    seen = []
    seg.model.prompt_encoder.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["input_points"].clone()), with_kwargs=True)
    seg.point_masks(image, np.array([[100, 25], [199, 49]], np.int64))
    s = seg.image_size  # (x, y) in the frame -> the S x S model input
    np.testing.assert_allclose(seen[0][0, :, 0].numpy(),
                               [[100 * s / 200, 25 * s / 50], [199 * s / 200, 49 * s / 50]],
                               rtol=1e-6)


def test_auto_is_sam3_with_weights_and_watershed_without(tracker):
    assert resolve_point_segmenter("auto", PastaConfig()) == "watershed"
    with_weights = PastaConfig(sam3_weights=str(tracker))
    assert resolve_point_segmenter("auto", with_weights) == "sam3"
    assert resolve_point_segmenter("watershed", with_weights) == "watershed"
    assert isinstance(build_point_segmenter("auto", PastaConfig()), WatershedPoints)
    assert isinstance(build_point_segmenter("auto", with_weights), Sam3PointSegmenter)
    with pytest.raises(PastaError, match="needs sam3_weights.*or use waw_point_segmenter "
                                         "watershed"):
        build_point_segmenter("sam3", PastaConfig())
    with pytest.raises(PastaError, match="SAM 3 checkpoint not found"):
        Sam3PointSegmenter.from_pretrained(tracker / "missing")


def test_the_watershed_point_segmenter_is_the_exg_default():
    img = np.full((60, 100, 3), 100, np.uint8)
    img[10:40, 10:40] = (50, 150, 50)
    img[20:50, 60:90] = (40, 120, 40)
    default = exg_instances(img, 0.1, 40, 50)
    explicit = exg_instances(img, 0.1, 40, 50, WatershedPoints(50))
    np.testing.assert_array_equal(default, explicit)
    assert sorted(np.bincount(default.ravel())[1:].tolist()) == [900, 900]


def test_a_waw_model_with_sam3_point_masks_runs_and_needs_its_checkpoint(run_cli, tracker,
                                                                         tiny_plants,
                                                                         tmp_path):
    out = tmp_path / "model"
    code, stdout, err = run_cli(["-q", "calibrate", "--method", "waw", "--baseline",
                                 tiny_plants.baseline, "--reference", tiny_plants.reference,
                                 "--out", out, "--sam3-weights", tracker, *FAST, *TINY_WAW])
    assert code == 0, err
    assert json.loads(stdout)["extracted_features"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method_params"]["waw_point_segmenter"] == "sam3", "auto resolved, saved"
    code, stdout, err = run_cli(["-q", "evaluate", "--model", out, "--test", tiny_plants.root,
                                 "--sam3-weights", tracker, "--backend", "torch",
                                 "--device", "cpu"])
    assert code == 0, err
    assert json.loads(stdout)["iou_background"] > 0
    code, _, err = run_cli(["-q", "evaluate", "--model", out, "--test", tiny_plants.root,
                            "--backend", "torch", "--device", "cpu"])
    assert code == 2 and err.count("error:") == 1 and "sam3_weights" in err, err


def test_a_watershed_model_refuses_a_sam3_point_segmenter(run_cli, tracker, tiny_plants,
                                                          tmp_path):
    from pasta_ros.core.model_io import load_model
    from pasta_ros.core.waw_method import WawObjects
    from pasta_ros.pipeline import build_extractor

    out = tmp_path / "model"
    code, _, err = run_cli(["-q", "calibrate", "--method", "waw", "--baseline",
                            tiny_plants.baseline, "--reference", tiny_plants.reference,
                            "--out", out, *FAST, *TINY_WAW])
    assert code == 0, err
    model = load_model(out)
    assert model.method_params["waw_point_segmenter"] == "watershed"
    cfg = PastaConfig(backend="torch", device="cpu", input_width=224, input_height=128)
    extractor = build_extractor(cfg)
    with pytest.raises(ModelError, match="calibrated with watershed point masks"):
        WawObjects.from_model(model, extractor, None,
                              Sam3PointSegmenter.from_pretrained(tracker))


@pytest.mark.gpu
def test_point_masks_on_cuda_agree_with_cpu(tracker, tiny_plants):
    cpu = Sam3PointSegmenter.from_pretrained(tracker, min_area=40)
    gpu = Sam3PointSegmenter.from_pretrained(tracker, min_area=40, device="cuda")
    for image in _plant_frames(tiny_plants, 2):
        region = vegetation_mask(image, 0.1, 40)
        points = point_prompts(region, 24)
        a, b = cpu.segment_points(image, region, points), gpu.segment_points(image, region,
                                                                             points)
        assert (a == b).mean() > 0.99, "float32 on both: only border pixels may differ"
