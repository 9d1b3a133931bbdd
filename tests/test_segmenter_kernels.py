"""The weight-free segmenter's compiled path gives the numpy path's instances, id for id.

Scenes are drawn with three colours whose colour-model log-odds are fixed by hand: the belt
(-4, background whatever the patch prior says), the object (+4) and a shading grey (-1:
object on an object patch, background on a belt patch; a hole of it is filled, a hole of the
belt colour stays open). On them: rings with belt and shading holes, islands inside holes
(filled holes that join two components), touching discs (watershed splits), diagonal-only
contacts, thin wires the opening removes, objects cut by the frame's edge, speckle.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import find_objects

from pasta_ros.core import instance_split
from pasta_ros.core.segmenters.clusters import ClusterSegmenter
from pasta_ros.core.segmenters.color_model import N_BINS, color_index
from pasta_ros.core.segmenters.mask_kernels import AVAILABLE as COMPILED

pytestmark = pytest.mark.skipif(not COMPILED, reason="numba not importable")

BELT, OBJECT, SHADE = (40, 40, 40), (200, 180, 160), (96, 96, 96)

def _lut() -> np.ndarray:
    lut = np.full(N_BINS, -4.0, np.float32)
    for colour, value in ((OBJECT, 4.0), (SHADE, -1.0)):
        lut[color_index(np.array([[colour]], np.uint8))[0, 0]] = value
    return lut

def _scene(seed: int, shape=(136, 200)) -> tuple[np.ndarray, np.ndarray]:
    """(image ``(H, W, 3) uint8``, cluster map ``(H/8, W/8) int64``: cluster 1 = object)."""
    rng = np.random.default_rng(seed)
    img = np.empty(shape + (3,), np.uint8)
    img[:] = BELT
    h, w = shape
    for _ in range(rng.integers(3, 9)):
        kind = rng.integers(0, 6)
        x, y, r = int(rng.integers(-10, w + 10)), int(rng.integers(-10, h + 10)), \
            int(rng.integers(6, 30))
        cv2.circle(img, (x, y), r, OBJECT, -1)
        if kind == 1:  # ring with a hole of belt or shading colour, maybe an island in it
            cv2.circle(img, (x, y), r // 2, BELT if rng.random() < 0.5 else SHADE, -1)
            if rng.random() < 0.6:
                cv2.circle(img, (x, y), max(r // 6, 2), OBJECT, -1)
        elif kind == 2:  # a touching neighbour
            cv2.circle(img, (x + int(1.6 * r), y), int(r * rng.uniform(0.4, 1.0)), OBJECT, -1)
        elif kind == 3:  # a wire
            cv2.line(img, (x, y), (x + int(rng.integers(-60, 60)), y + int(rng.integers(-60, 60))),
                     OBJECT, int(rng.integers(1, 4)))
        elif kind == 4:  # shading patches on the object
            cv2.circle(img, (x + r // 3, y), max(r // 3, 2), SHADE, -1)
    for _ in range(int(rng.integers(0, 3))):  # diagonal-only contact between two squares
        x, y, s = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40)), \
            int(rng.integers(8, 18))
        img[y:y + s, x:x + s] = OBJECT
        img[y + s:y + 2 * s, x + s:x + 2 * s] = OBJECT
    speckle = rng.random(shape) < 0.01
    img[speckle] = OBJECT
    cmap = (rng.random((h // 8, w // 8)) < 0.5).astype(np.int64)
    return img, cmap

def _pair(min_area: int, depth: float) -> tuple[ClusterSegmenter, ClusterSegmenter]:
    bg = np.array([True, False])
    return tuple(ClusterSegmenter(bg, _lut(), min_area=min_area, seed_depth=depth,
                                  compiled=c) for c in (True, False))

@pytest.mark.parametrize("min_area,depth", [(150, 0.0), (20, 0.0), (60, 0.5)])
def test_compiled_path_gives_the_numpy_ids(min_area, depth):
    fast, exact = _pair(min_area, depth)
    assert fast.compiled and not exact.compiled
    split_frames = 0
    for seed in range(40):
        img, cmap = _scene(seed)
        cmap_t = torch.from_numpy(cmap)
        a = fast.segment(img, cmap_t)
        b = exact.segment(img, cmap_t)
        assert a.dtype == np.int32 and a.shape == img.shape[:2]
        np.testing.assert_array_equal(a, b, err_msg=f"seed {seed}")
        split_frames += int(a.max() > 0)
    assert split_frames >= 30  # the scenes do hold objects

def test_compiled_path_on_random_colour_evidence():
    """Chaotic masks (random log-odds per colour bin and random patches): many holes,
    islands and merges."""

    rng = np.random.default_rng(7)
    for seed in range(16):
        lut = rng.uniform(-4, 4, N_BINS).astype(np.float32)
        shape = (96, 128) if seed < 8 else (300, 420)  # large: multi-threaded labelling
        img = (rng.random(shape + (3,)) * 255).astype(np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), 2.0)  # blobs, not white noise
        cmap = torch.from_numpy(rng.integers(0, 3, (12, 16)))
        bg = np.array([True, False, seed % 2 == 0])
        fast, exact = (ClusterSegmenter(bg, lut, min_area=30, compiled=c) for c in (True, False))
        np.testing.assert_array_equal(fast.segment(img, cmap), exact.segment(img, cmap))

def test_two_touching_discs_split_and_a_filled_shading_hole():
    """Hand-made: two discs of radius 20 whose centres are 36 px apart give two instances;
    a shading-grey hole inside a third disc is filled, a belt-coloured one stays open."""

    img = np.empty((100, 220, 3), np.uint8)
    img[:] = BELT
    cv2.circle(img, (30, 50), 20, OBJECT, -1)
    cv2.circle(img, (66, 50), 20, OBJECT, -1)
    cv2.circle(img, (140, 50), 25, OBJECT, -1)
    cv2.circle(img, (140, 50), 8, SHADE, -1)
    cv2.circle(img, (195, 50), 20, OBJECT, -1)
    cv2.circle(img, (195, 50), 8, BELT, -1)
    cmap = torch.ones((12, 27), dtype=torch.int64)  # every patch an object patch
    fast, exact = _pair(150, 0.0)
    ids = fast.segment(img, cmap)
    np.testing.assert_array_equal(ids, exact.segment(img, cmap))
    assert ids.max() == 4
    assert ids[50, 30] != ids[50, 66] and ids[50, 30] > 0 and ids[50, 66] > 0
    assert ids[50, 140] == ids[50, 120] > 0  # shading hole filled
    assert ids[50, 195] == 0 and ids[50, 180] > 0  # belt hole open

def test_instance_boxes_equal_find_objects():
    rng = np.random.default_rng(3)
    ids = np.zeros((50, 70), np.int32)
    for i in (1, 2, 4, 7):  # ids 3, 5, 6 absent
        y, x = rng.integers(0, 40), rng.integers(0, 60)
        ids[y:y + rng.integers(1, 10), x:x + rng.integers(1, 10)] = i
    assert instance_split.instance_boxes(ids) == find_objects(ids)


def test_bench_segmenter_times_both_paths_on_the_same_frames():
    from argparse import Namespace

    from pasta_ros.bench.segmenter import bench_segmenter

    out = bench_segmenter(Namespace(repeats=2, device="cpu", frame_size=(160, 96),
                                    n_baseline=6))
    other = {"compiled_edge_seeds", "compiled_distance_seeds"} & set(out["median_ms"])
    assert len(other) == 1  # the other touching-object rule, whichever the config has off
    assert {"compiled", "numpy", "compiled+split", "numpy+split"} | other == set(out["median_ms"])
    assert out["ids_agree_pct"] == 100.0 and out["speedup"] > 0
