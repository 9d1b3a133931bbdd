"""Touching objects split between image edges (``split_edges``) on hand-made scenes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pasta_ros.core.segmenters.clusters import ClusterSegmenter, split_instances
from pasta_ros.core.segmenters.color_model import N_BINS, color_index
from pasta_ros.core.segmenters.edge_split import (
    box_edges,
    box_gradient,
    edge_image,
    edge_seeds,
    split_by_edges,
)
from pasta_ros.core.segmenters.mask_kernels import AVAILABLE as COMPILED

BELT, STEEL, SEAM = 40, 170, 90  # gray levels


def _blobs(mask: np.ndarray):
    n, comps, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8,
                                                           ltype=cv2.CV_32S)
    return comps, stats


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def _two_plates() -> tuple[np.ndarray, np.ndarray]:
    """Two 40 x 50 steel plates side by side (one 40 x 100 blob, no neck), a 2-px darker
    seam where they meet: (``(H, W) bool`` mask, ``(H, W, 3) uint8`` image)."""
    gray = np.full((80, 140), BELT, np.uint8)
    gray[20:60, 20:120] = STEEL
    gray[20:60, 69:71] = SEAM
    return gray > BELT, _rgb(gray)


def test_plates_meeting_along_a_seam_split_into_two_where_the_distance_split_cannot():
    mask, rgb = _two_plates()
    assert split_instances(mask, 0.5, 150).max() == 1  # one core: the blob has no neck
    comps, stats = _blobs(mask)
    ids = split_by_edges(comps, stats, edge_image(rgb, False), 180.0, 150)
    assert ids.max() == 2
    assert set(np.unique(ids[mask])) == {1, 2} and not ids[~mask].any()
    # each plate is one instance, the seam's 2 columns go to either side
    left, right = ids[40, 30], ids[40, 110]
    assert left != right
    assert (ids[20:60, 20:69] == left).all() and (ids[20:60, 71:120] == right).all()


def test_a_weak_seam_below_the_threshold_does_not_split():
    mask, rgb = _two_plates()
    rgb[20:60, 69:71] = STEEL - 8  # contrast 8: under a high threshold of 180 (low 60)
    comps, stats = _blobs(mask)
    assert split_by_edges(comps, stats, edge_image(rgb, False), 180.0, 150).max() == 1


def test_a_small_highlight_inside_one_piece_seeds_nothing():
    gray = np.full((100, 100), BELT, np.uint8)
    cv2.circle(gray, (50, 50), 35, STEEL, -1)
    cv2.circle(gray, (45, 45), 5, 250, -1)  # a highlight: edges round a cell of ~80 px
    mask = gray > BELT
    comps, stats = _blobs(mask)
    edges = box_edges(edge_image(_rgb(gray), False), (slice(0, 100), slice(0, 100)), 180.0)
    assert edges[38:52, 38:52].any()  # the highlight's rim is an edge
    ids = split_by_edges(comps, stats, edge_image(_rgb(gray), False), 180.0, 150)
    assert ids.max() == 1 and (ids[mask] == 1).all()


def test_seeds_are_the_eroded_parts_between_edges_of_at_least_min_seed_pixels():
    piece = np.zeros((12, 30), bool)
    piece[1:11, 1:29] = True
    edges = np.zeros_like(piece)
    edges[:, 9] = True  # cuts a 10 x 8 part (eroded: 8 x 6 = 48 px) from a 10 x 19 part
    n, seeds = edge_seeds(piece, edges, 40)
    assert n == 2
    assert np.count_nonzero(seeds == 1) == 8 * 6  # rows 2-9, columns 2-7
    assert np.count_nonzero(seeds == 2) == 8 * 17  # rows 2-9, columns 11-27
    assert edge_seeds(piece, edges, 49)[0] == 1  # the 48-px part is too small


def test_box_filters_equal_the_whole_frame_s_blur_canny_and_gradient():
    mask, rgb = _two_plates()
    rgb[30:50, 40:44] = (250, 30, 30)  # a red mark: the colour image has an edge here
    box = (slice(19, 61), slice(19, 121))  # the blob's box grown by one pixel
    square = np.ones((3, 3), np.uint8)
    for colour in (False, True):
        image = edge_image(rgb, colour)
        blurred = cv2.GaussianBlur(image, (3, 3), 0)
        full = cv2.dilate(cv2.Canny(blurred, 60, 180), square) > 0
        grad = cv2.morphologyEx(blurred, cv2.MORPH_GRADIENT, square)
        grad = grad.max(axis=2) if colour else grad
        np.testing.assert_array_equal(box_edges(image, box, 180.0), full[box])
        np.testing.assert_array_equal(box_gradient(image, box), grad[box].astype(np.float32))


def test_parts_under_min_area_are_dropped_and_ids_are_consecutive():
    mask, rgb = _two_plates()
    gray = np.full(mask.shape, BELT, np.uint8)
    gray[mask] = STEEL
    gray[20:60, 98:100] = SEAM  # a third plate of 40 x 20 = 800 px on the right
    rgb = _rgb(gray)
    rgb[20:60, 69:71] = SEAM
    comps, stats = _blobs(mask)
    three = split_by_edges(comps, stats, edge_image(rgb, False), 180.0, 150)
    assert three.max() == 3
    two = split_by_edges(comps, stats, edge_image(rgb, False), 180.0, 900)  # 800-px plate dropped
    assert two.max() == 2 and np.count_nonzero(two == 0) > np.count_nonzero(three == 0)


def test_blobs_are_split_apart_from_each_other_with_ids_in_blob_order():
    mask, rgb = _two_plates()
    gray = np.full((80, 300), BELT, np.uint8)  # the seamed pair, then a plain plate right
    gray[:, :140] = rgb[..., 0]
    gray[20:60, 200:260] = STEEL
    comps, stats = _blobs(gray > BELT)
    ids = split_by_edges(comps, stats, edge_image(_rgb(gray), False), 180.0, 150)
    assert ids.max() == 3
    assert ids[40, 30] == 1 and ids[40, 110] == 2 and (ids[20:60, 200:260] == 3).all()
    flipped = np.ascontiguousarray(gray[:, ::-1])  # the plain plate first: its id first
    comps, stats = _blobs(flipped > BELT)
    ids = split_by_edges(comps, stats, edge_image(_rgb(flipped), False), 180.0, 150)
    assert ids.max() == 3 and (ids[20:60, 40:100] == 1).all()


def test_plates_of_one_brightness_and_two_hues_split_only_on_the_colour_image():
    rgb = np.full((80, 140, 3), BELT, np.uint8)
    rgb[20:60, 20:70] = (220, 100, 60)  # copper-like, gray 131
    rgb[20:60, 70:120] = (120, 150, 90)  # brass-like green-yellow, gray 134: no gray edge
    comps, stats = _blobs((rgb != BELT).any(axis=2))
    assert split_by_edges(comps, stats, edge_image(rgb, False), 240.0, 150).max() == 1
    ids = split_by_edges(comps, stats, edge_image(rgb, True), 240.0, 150)
    assert ids.max() == 2
    assert (ids[20:60, 20:69] == ids[40, 30]).all() and (ids[20:60, 71:120] == ids[40, 110]).all()
    assert box_gradient(edge_image(rgb, True), (slice(0, 80), slice(0, 140))).ndim == 2


@pytest.mark.skipif(not COMPILED, reason="numba not importable")
def test_segmenter_compiled_and_numpy_paths_agree_with_split_edges():
    lut = np.full(N_BINS, -4.0, np.float32)
    for level in (STEEL, SEAM, 250):
        lut[color_index(np.array([[[level] * 3]], np.uint8))[0, 0]] = 4.0
    rng = np.random.default_rng(3)
    split = 0
    for seed in range(12):
        gray = np.full((136, 200), BELT, np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            x, y, w, h = (int(v) for v in rng.integers([0, 0, 20, 20], [160, 100, 80, 50]))
            gray[y:y + h, x:x + w] = STEEL
            gray[y:y + h, x + w // 2: x + w // 2 + 2] = SEAM  # each plate pair meets on a seam
        img = _rgb(gray)
        cmap = torch.from_numpy(np.ones((17, 25), np.int64))
        a, b = (ClusterSegmenter(np.array([True, False]), lut, split_edges=180.0, compiled=c)
                .segment(img, cmap) for c in (True, False))
        np.testing.assert_array_equal(a, b, err_msg=f"seed {seed}")
        split += int(a.max() > _blobs(gray > BELT)[1].shape[0] - 1)
    assert split >= 6  # most scenes were split along their seams


def _necked_discs() -> tuple[np.ndarray, np.ndarray]:
    """Two steel discs of radius 20, centres 36 px apart, one colour: a blob with a neck and
    no edge between the discs (``(H, W) bool`` mask, ``(H, W, 3) uint8`` image)."""
    gray = np.full((80, 140), BELT, np.uint8)
    cv2.circle(gray, (40, 40), 20, STEEL, -1)
    cv2.circle(gray, (76, 40), 20, STEEL, -1)
    return gray > BELT, _rgb(gray)


def test_split_necks_cuts_an_edge_part_at_its_neck():
    from pasta_ros.core.segmenters.clusters import split_at_necks

    mask, rgb = _necked_discs()
    comps, stats = _blobs(mask)
    ids = split_by_edges(comps, stats, edge_image(rgb, True), 240.0, 150)
    assert ids.max() == 1  # no edge inside the blob: the edge split keeps it whole
    necks = split_at_necks(ids, 0.5, 150)
    assert necks.max() == 2 and necks[40, 40] != necks[40, 76]
    assert (necks > 0).sum() == mask.sum()  # the watershed gives every pixel to a disc
    # the plates (no neck, one seam) stay as the edges cut them: one part each
    mask2, rgb2 = _two_plates()
    comps2, stats2 = _blobs(mask2)
    plates = split_by_edges(comps2, stats2, edge_image(rgb2, False), 180.0, 150)
    np.testing.assert_array_equal(split_at_necks(plates, 0.5, 150), plates)


@pytest.mark.parametrize("compiled", [False, True] if COMPILED else [False])
def test_the_segmenter_splits_necks_only_when_asked(compiled: bool):
    mask, rgb = _necked_discs()
    lut = np.full(N_BINS, -4.0, np.float32)
    lut[color_index(np.array([[rgb[40, 40]]], np.uint8))[0, 0]] = 4.0
    cmap = torch.ones((10, 17), dtype=torch.int64)
    bg = np.array([True, False])
    kw = dict(min_area=150, split_edges=240.0, compiled=compiled)
    assert ClusterSegmenter(bg, lut, **kw).segment(rgb, cmap).max() == 1
    assert ClusterSegmenter(bg, lut, split_necks=True, **kw).segment(rgb, cmap).max() == 2
