"""WaW's heuristic object extraction: Excess Green (ExG) mask -> point prompts -> instances.

ExG (Woebbecke et al.) on chromatic coordinates ``r, g, b = R, G, B / (R + G + B)`` is
``2g - r - b`` in [-1, 2]: about 0 for grey soil, stones and metal, 0.3-0.8 for vegetation.
Pixels above a threshold are vegetation. As in WaW, each vegetation blob is prompted with
points (distance-transform peaks, at least ``spacing`` pixels apart) and the instances are
grown from those points by a point segmenter: SAM 3's point-prompted decoder when a checkpoint
is given, else the weight-free watershed on the distance transform (the seeded form of the
``clusters`` segmenter's split); see :mod:`pasta_ros.core.segmenters.points`. Dense prompts
over-segment large plants, which is WaW's documented behaviour (PASTA §IV-A) and why it
extracts many features.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.segmentation import watershed

from pasta_ros.core.errors import ImageError
from pasta_ros.core.segmenters.base import PointSegmenter
from pasta_ros.core.segmenters.clusters import fill_holes, relabel_without_small


def excess_green(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(H, W) float32`` ExG = 2g - r - b (chromatic coordinates).

    Raises ImageError for a grayscale image (one channel, or R = G = B everywhere, as a mono
    camera frame converted to RGB): ExG is 0 everywhere there and finds nothing."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"ExG needs an (H, W, 3) RGB image, got shape {rgb.shape}: use a "
                         "colour camera or waw_masks segmenter")
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        raise ImageError("ExG needs a colour image but this one is grayscale (R = G = B): "
                         "use a colour camera, or calibrate with --waw-masks segmenter")
    x = rgb.astype(np.float32)
    total = np.maximum(x.sum(axis=2), 1.0)
    r, g, b = (x[..., i] / total for i in range(3))
    return 2.0 * g - r - b


def vegetation_mask(rgb: np.ndarray, threshold: float, min_area: int) -> np.ndarray:
    """``(H, W) bool``: ExG > threshold, opened (3x3), holes filled, blobs < min_area gone."""
    m = (excess_green(rgb) > threshold).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    m = fill_holes(m)
    return relabel_without_small(cv2.connectedComponents(m, connectivity=8)[1], min_area) > 0


def point_prompts(mask: np.ndarray, spacing: int) -> np.ndarray:
    """Point prompts inside a ``(H, W) bool`` mask: ``(P, 2) int64`` (x, y) pixels.

    Local maxima of the distance transform (in a ``spacing`` window), so points sit on blob
    and leaf cores about ``spacing`` apart; every blob gets at least its deepest point."""
    m = mask.astype(np.uint8)
    if not m.any():
        return np.zeros((0, 2), np.int64)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    win = max(3, int(spacing) | 1)
    peaks = (dist >= cv2.dilate(dist, np.ones((win, win), np.uint8)) - 1e-6) & (dist >= 1.0)
    _, comps = cv2.connectedComponents(m, connectivity=8)
    # the deepest pixel of every blob (a blob may hold no peak above 1 px)
    order = np.argsort(dist.ravel(), kind="stable")[::-1]
    blobs, first = np.unique(comps.ravel()[order], return_index=True)
    peaks.ravel()[order[first[blobs > 0]]] = True
    _, plateaus = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8)
    idx = np.flatnonzero(plateaus)
    _, first = np.unique(plateaus.ravel()[idx], return_index=True)  # one point per plateau
    ys, xs = np.divmod(idx[first], mask.shape[1])
    return np.stack([xs, ys], 1).astype(np.int64)


def instances_from_points(mask: np.ndarray, points: np.ndarray, min_area: int) -> np.ndarray:
    """Grow one instance per point over a ``(H, W) bool`` mask (watershed on the negated
    distance transform); ``(H, W) int32`` ids 1..N, pieces under ``min_area`` dropped."""
    markers = np.zeros(mask.shape, np.int32)
    for i, (x, y) in enumerate(points, 1):
        markers[y, x] = i
    if not len(points):
        return markers
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    grown = watershed(-dist, markers, mask=mask.astype(bool)).astype(np.int32)
    return relabel_without_small(grown, min_area)


class WatershedPoints:
    """The weight-free point segmenter: one instance grown per point over the region
    (:func:`instances_from_points`); the image is not looked at."""

    name = "watershed"

    def __init__(self, min_area: int) -> None:
        self.min_area = int(min_area)

    def segment_points(self, image: np.ndarray, region: np.ndarray,
                       points: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8``, ``(H, W) bool``, ``(P, 2) int64`` -> ``(H, W) int32`` ids."""
        return instances_from_points(region, points, self.min_area)


def exg_instances(rgb: np.ndarray, threshold: float, spacing: int, min_area: int,
                  point_segmenter: PointSegmenter | None = None) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(H, W) int32`` vegetation instances (0 = soil): the ExG
    mask, its point prompts, and one instance per point from ``point_segmenter`` (default
    :class:`WatershedPoints`; SAM 3 when weights are given, see ``segmenters/points.py``)."""
    mask = vegetation_mask(rgb, threshold, min_area)
    segmenter = point_segmenter or WatershedPoints(min_area)
    return segmenter.segment_points(rgb, mask, point_prompts(mask, spacing))
