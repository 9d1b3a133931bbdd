"""``rim_prior``: object patches next to a background patch get a weaker prior, so the pixel
colour model decides there (shadows and belt inside halo patches); hand-computed values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.segmenters.clusters import ClusterSegmenter
from pasta_ros.core.segmenters.color_model import N_BINS, color_index
from pasta_ros.core.segmenters.mask_kernels import AVAILABLE as COMPILED

BELT, OBJECT, SHADOW = (40, 40, 40), (200, 180, 160), (96, 96, 96)
LOGIT = float(np.log(0.95 / 0.05))
BG = np.array([True, False])  # cluster 0 background, cluster 1 object


def _lut() -> np.ndarray:
    """Colour log-odds: belt -4, object +4, shadow -1 (object under the full prior)."""
    lut = np.full(N_BINS, -4.0, np.float32)
    for colour, value in ((OBJECT, 4.0), (SHADOW, -1.0)):
        lut[color_index(np.array([[colour]], np.uint8))[0, 0]] = value
    return lut


def test_coarse_prior_by_hand() -> None:
    cmap = np.zeros((5, 6), np.int64)
    cmap[1:5, 1:4] = 1  # a 4x3 object block touching the grid's bottom edge
    seg = ClusterSegmenter(BG, _lut(), rim_prior=0.5)
    got = seg.coarse_prior(torch.from_numpy(cmap))
    want = np.where(cmap == 1, 0.5, -LOGIT).astype(np.float32)
    # interior: every 8-neighbour inside the grid is an object patch (row 4 is on the edge)
    want[2:5, 2] = LOGIT
    np.testing.assert_allclose(got, want, rtol=1e-6)
    off = ClusterSegmenter(BG, _lut())
    np.testing.assert_allclose(off.coarse_prior(torch.from_numpy(cmap)),
                               np.where(cmap == 1, LOGIT, -LOGIT), rtol=1e-6)
    # 2.944 (logit 0.95 to 3 decimals, the config's upper bound) is the segmenter without a rim
    assert ClusterSegmenter(BG, _lut(), rim_prior=2.944).rim_prior == pytest.approx(LOGIT)
    assert PastaConfig().rim_prior == 0.0


def _shadow_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 object square at (32..72, 32..72) with a 6 px shadow below and right of it;
    every patch within one patch of the square is an object patch (the halo)."""
    img = np.empty((104, 104, 3), np.uint8)
    img[:] = BELT
    img[38:78, 38:78] = SHADOW
    img[32:72, 32:72] = OBJECT
    cmap = np.zeros((13, 13), np.int64)
    cmap[3:10, 3:10] = 1  # pixels 24..80: the square and one patch of halo around it
    return img, cmap


@pytest.mark.parametrize("compiled", [False, True] if COMPILED else [False])
def test_a_weak_rim_drops_the_shadow_and_keeps_the_object(compiled: bool) -> None:
    img, cmap = _shadow_scene()
    cm = torch.from_numpy(cmap)
    full = ClusterSegmenter(BG, _lut(), min_area=50, compiled=compiled).segment(img, cm)
    rim = ClusterSegmenter(BG, _lut(), min_area=50, rim_prior=0.0,
                           compiled=compiled).segment(img, cm)
    obj = np.zeros(img.shape[:2], bool)
    obj[32:72, 32:72] = True
    shadow = (img == SHADOW).all(2)
    assert (full[shadow] > 0).mean() > 0.95  # the full prior (+2.94) outvotes the -1
    # rim prior 0: the upsampled prior (OpenCV: source = (y + 0.5) / 8 - 0.5) falls from
    # 2.94 at patch row 8 to 0 at row 9: pixel 72 -> 1.29 (above the shadow's 1: kept),
    # pixel 73 -> 0.92 (dropped), so only the shadow's first pixel beyond the object stays
    ring = cv2.dilate(obj.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (rim[shadow & ~ring] > 0).any()
    assert (rim[shadow & ring] > 0).mean() > 0.9
    assert (rim[obj] > 0).all() and len(np.unique(rim[obj])) == 1  # the object is whole
    assert not (rim[~obj & ~shadow] > 0).any()


@pytest.mark.skipif(not COMPILED, reason="numba not importable")
def test_compiled_path_gives_the_numpy_ids_with_a_rim_prior() -> None:
    rng = np.random.default_rng(5)
    lut = rng.uniform(-4, 4, N_BINS).astype(np.float32)
    for _ in range(8):
        img = cv2.GaussianBlur((rng.random((120, 160, 3)) * 255).astype(np.uint8), (0, 0), 2)
        cmap = torch.from_numpy(rng.integers(0, 2, (15, 20)))
        fast, exact = (ClusterSegmenter(BG, lut, min_area=30, rim_prior=1.0, compiled=c)
                       for c in (True, False))
        np.testing.assert_array_equal(fast.segment(img, cmap), exact.segment(img, cmap))
