"""Calibrate + segment through the Python API on tiny sets; properties, not magic numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from pasta_ros.core.calibration import calibrate
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.core.metrics import ConfusionMatrix
from pasta_ros.core.model_io import CalibratedModel, load_model
from pasta_ros.core.segmenters import build_segmenter
from pasta_ros.data.images import read_image
from pasta_ros.data.layout import DatasetLayout, read_mask, test_pairs
from pasta_ros.pipeline import FrameResult, PastaPipeline, build_extractor
from pasta_ros.sources import folder_source

CFG = PastaConfig(input_width=224, input_height=128, clusters=8, device="cpu")
# Measured on tiny_steel (seed 0, K=8, efficientnet_lite0, colour weight 2.0, object codebook):
# background IoU 0.978-0.981, foreground (target + anomaly vs background) IoU 0.595-0.643
# (1 vs 2 torch threads, and two package revisions). Floors are ~2/3 of that.
BACKGROUND_IOU_FLOOR = 0.65
FOREGROUND_IOU_FLOOR = 0.40


def make_extractor(cfg: PastaConfig) -> FeatureExtractor:
    """The configured backbone as the CLI builds it (default backend: ONNX Runtime)."""
    return build_extractor(cfg)


def make_pipeline(model: CalibratedModel, extractor: FeatureExtractor,
                  cfg: PastaConfig) -> PastaPipeline:
    return PastaPipeline(model, extractor, build_segmenter(cfg.segmenter, model, cfg),
                         cfg.vote_threshold)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return make_extractor(CFG)


@pytest.fixture(scope="module")
def steel_model(tiny_steel: DatasetLayout, extractor: FeatureExtractor) -> CalibratedModel:
    return calibrate(extractor, folder_source(tiny_steel.baseline),
                     folder_source(tiny_steel.reference), folder_source(tiny_steel.empty), CFG,
                     quiet=True)


@pytest.fixture(scope="module")
def steel_results(tiny_steel: DatasetLayout, steel_model: CalibratedModel,
                  extractor: FeatureExtractor
                  ) -> list[tuple[np.ndarray, np.ndarray, FrameResult]]:
    """(image, ground-truth mask, result) per test image."""
    pipe = make_pipeline(steel_model, extractor, CFG)
    out = []
    for _, image_path, mask_path in test_pairs(tiny_steel):
        image = read_image(image_path)
        out.append((image, read_mask(mask_path), pipe.process(image)))
    return out


def test_api_and_cli_calibrations_agree(steel_model: CalibratedModel, tiny_model) -> None:
    """The CLI (conftest ``tiny_model``) and the API, same data and settings: same model."""
    cli = load_model(tiny_model)
    np.testing.assert_array_equal(cli.centers, steel_model.centers)
    np.testing.assert_array_equal(cli.anomaly, steel_model.anomaly)
    np.testing.assert_array_equal(cli.background, steel_model.background)


def test_labels_and_instances_are_consistent(steel_results) -> None:
    n_instances = 0
    for image, _, r in steel_results:
        h, w = image.shape[:2]
        assert r.labels.shape == (h, w) and r.labels.dtype == np.uint8
        assert set(np.unique(r.labels)) <= {0, 1, 2}
        owner = np.zeros((h, w), np.int32)
        for inst in r.instances:
            x, y, bw, bh = inst.bbox
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            assert inst.mask.shape == (bh, bw) and inst.mask.dtype == bool
            assert int(inst.mask.sum()) == inst.area > 0
            # the crop is tight: every border row and column of the bbox holds a mask pixel
            assert inst.mask[0].any() and inst.mask[-1].any()
            assert inst.mask[:, 0].any() and inst.mask[:, -1].any()
            cx, cy = inst.centroid
            assert x <= cx <= x + bw - 1 and y <= cy <= y + bh - 1
            assert inst.label in (1, 2) and 0.0 <= inst.anomaly_share <= 1.0
            window = owner[y:y + bh, x:x + bw]
            assert not window[inst.mask].any(), "instances overlap"
            window[inst.mask] = inst.id
            assert (r.labels[y:y + bh, x:x + bw][inst.mask] == inst.label).all()
        # every labelled pixel belongs to exactly one instance, and no other pixel is labelled
        np.testing.assert_array_equal(owner > 0, r.labels > 0)
        assert sorted(i.id for i in r.instances) == list(range(1, len(r.instances) + 1))
        n_instances += len(r.instances)
    assert n_instances > 0


def test_segmentation_iou_floors(steel_results) -> None:
    cm = ConfusionMatrix()
    for _, truth, r in steel_results:
        cm.add(truth, r.labels)
    background_iou = cm.iou()[0]
    fg = ConfusionMatrix(2)
    for _, truth, r in steel_results:
        fg.add((truth > 0).astype(np.uint8), (r.labels > 0).astype(np.uint8))
    foreground_iou = fg.iou()[1]
    assert background_iou > BACKGROUND_IOU_FLOOR, background_iou
    assert foreground_iou > FOREGROUND_IOU_FLOOR, foreground_iou


def test_baseline_equal_to_reference_has_no_anomaly(tiny_steel: DatasetLayout,
                                                     extractor: FeatureExtractor) -> None:
    base = folder_source(tiny_steel.baseline)
    model = calibrate(extractor, base, base, folder_source(tiny_steel.empty), CFG, quiet=True)
    assert not model.anomaly.any()
    seen = model.p_baseline > 0
    np.testing.assert_allclose(model.ratio()[seen], 1.0, atol=1e-6)


# --------------------------------------------------------------------------- red squares

SIDE = 96  # px; 12 x 12 patches at stride 8
GREY, BLUE, RED = (128, 128, 128), (90, 120, 200), (230, 20, 20)


def square_scene(rng: np.random.Generator, red: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """Noisy grey belt, two blue 16 px "targets", optionally a red 32 px square (top-left
    corner returned; (-1, -1) without). Everything sits on the 8 px patch grid."""
    img = np.asarray(GREY, np.float32) + rng.normal(0, 4, (SIDE, SIDE, 3))
    for _ in range(2):
        y, x = rng.integers(0, 9, 2) * 8
        img[y:y + 16, x:x + 16] = BLUE
    corner = (-1, -1)
    if red:
        y, x = rng.integers(1, 7, 2) * 8
        img[y:y + 32, x:x + 32] = RED
        corner = (int(y), int(x))
    return np.clip(img, 0, 255).astype(np.uint8), corner


def square_source(seed: int, n: int, red: Callable[[int], bool]
                  ) -> Callable[[], Iterator[tuple[str, np.ndarray]]]:
    def images() -> Iterator[tuple[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield str(i), square_scene(rng, red(i))[0]
    return images


def test_colour_seen_only_in_the_baseline_is_an_anomaly() -> None:
    # the paper's rule with the 2-part split: on this tiny set (4 reference images) the default
    # 4-part split also cuts the blue and grey clusters and some fine parts next to the red
    # squares miss the reference, so a few stray patches become anomalies (BENCHMARKS.md,
    # issue 9, session 11; a known limit of split_parts 4 on very small reference sets); and
    # the outer ring's border prior only: on a 12x12-patch frame the rings 1-3 that
    # border_depth adds run through the squares themselves
    cfg = PastaConfig(input_width=SIDE, input_height=SIDE, clusters=6, device="cpu",
                      split_parts=2, border_depth=0)
    ext = make_extractor(cfg)
    model = calibrate(ext, square_source(0, 8, lambda i: i % 2 == 0),
                      square_source(1, 4, lambda i: False), None, cfg, quiet=True)
    assert model.anomaly.any()
    pipe = make_pipeline(model, ext, cfg)
    rng = np.random.default_rng(5)
    for _ in range(3):
        image, (y, x) = square_scene(rng, red=True)
        r = pipe.process(image)
        py, px = y // 8, x // 8
        square = np.zeros_like(r.anomaly_patches)
        square[py:py + 4, px:px + 4] = True
        near = np.zeros_like(square)
        near[py - 1:py + 5, px - 1:px + 5] = True  # one patch of receptive-field halo
        # measured: all 16 square patches anomalous, none elsewhere
        assert r.anomaly_patches[py + 1:py + 3, px + 1:px + 3].all()
        assert r.anomaly_patches[square].mean() >= 0.75
        assert not r.anomaly_patches[~near].any()
        assert r.labels[y + 16, x + 16] == 2
    clean, _ = square_scene(rng, red=False)
    r = pipe.process(clean)
    assert not r.anomaly_patches.any() and 2 not in r.labels
