"""Touching objects split where the image shows an edge between them (``split_edges``).

Two pieces that touch make one blob of the object mask. The distance-transform split finds
them only when the blob has a neck; pieces that overlap or press flat against each other
have none (on the dev conveyor presets, the distance split recovers 73.5 % of the targets
even from the ground-truth mask). The image still shows where they meet: the rim of the
upper piece, a shadow, a change of surface. Here, per blob (connected component of the
cleaned mask), on its own box:

1. Canny edges of the 3x3-blurred image (high threshold ``high``, low ``high / 3``),
   dilated by a 3x3 square; on the colour image (``split_edges_colour``, default) each
   pixel's strongest channel gradient counts, so copper touching brass of one brightness
   still shows an edge; or on the gray image;
2. seeds: the 4-connected parts of the blob minus its edges, eroded by a 3x3 square, of at
   least ``min_area / 2`` pixels; a texture line that encloses only a small cell, or does not
   cut the blob, leaves one seed;
3. a blob with two or more seeds is flooded from them (watershed) over the morphological
   gradient of that image, so the parts meet on the strongest edge between them; parts
   under ``min_area`` pixels are dropped, pixels no seed reaches stay with the blob's first
   part.

Blobs with fewer than two seeds stay whole. Ids: blobs in the order of ``comps``; a split
blob's parts in the raster order of their seeds' first pixels. The rule comes from
``scripts/oracle_issue9_seeds.py`` (ground-truth masks, dev presets); its threshold and the
colour image were chosen on the dev presets end to end (BENCHMARKS.md, issue 9, session 12).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.segmentation import watershed

MARGIN = 3  # px around a blob's box for Canny's support (Sobel 1 + hysteresis context)
LOW_RATIO = 1.0 / 3.0  # Canny low threshold = high x LOW_RATIO (Canny's recommended 1:3)
_SQUARE = np.ones((3, 3), np.uint8)


def edge_image(image: np.ndarray, colour: bool) -> np.ndarray:
    """What the edges are found on: ``image`` ``(H, W, 3) uint8`` RGB itself (``colour``:
    Canny takes each pixel's strongest channel gradient, so copper meeting brass of the same
    brightness still shows an edge) or its ``(H, W) uint8`` gray version. Blurred later, per
    blob box (:func:`box_edges`)."""
    return image if colour else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def component_box(stats: np.ndarray, c: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Component ``c``'s box (OpenCV ``stats`` row: x, y, w, h) grown by one pixel, clipped
    to the frame ``shape``."""
    x, y, w, h = (int(v) for v in stats[c, :4])
    return (slice(max(y - 1, 0), min(y + h + 1, shape[0])),
            slice(max(x - 1, 0), min(x + w + 1, shape[1])))


def _grown(box: tuple[slice, slice], shape: tuple[int, int], by: int) -> tuple[slice, slice]:
    ys, xs = box
    return (slice(max(ys.start - by, 0), min(ys.stop + by, shape[0])),
            slice(max(xs.start - by, 0), min(xs.stop + by, shape[1])))


def _inner(box: tuple[slice, slice], big: tuple[slice, slice]) -> tuple[slice, slice]:
    """``box`` as slices of the crop ``big`` that contains it."""
    return (slice(box[0].start - big[0].start, box[0].stop - big[0].start),
            slice(box[1].start - big[1].start, box[1].stop - big[1].start))


def _blurred(image: np.ndarray, box: tuple[slice, slice]) -> tuple[np.ndarray, tuple]:
    """The 3x3 Gaussian blur of ``image`` on ``box`` grown by MARGIN (clipped), equal to the
    whole frame's blur there (computed on one more pixel of context, then trimmed), and
    ``box`` as slices of it."""
    shape = image.shape[:2]
    big, ext = _grown(box, shape, MARGIN), _grown(box, shape, MARGIN + 1)
    crop = cv2.GaussianBlur(np.ascontiguousarray(image[ext]), (3, 3), 0)[_inner(big, ext)]
    return np.ascontiguousarray(crop), _inner(box, big)


def _canny(crop: np.ndarray, high: float) -> np.ndarray:
    return cv2.dilate(cv2.Canny(crop, high * LOW_RATIO, high), _SQUARE) > 0


def _gradient(crop: np.ndarray) -> np.ndarray:
    grad = cv2.morphologyEx(crop, cv2.MORPH_GRADIENT, _SQUARE)
    return (grad.max(axis=2) if grad.ndim == 3 else grad).astype(np.float32)


def box_edges(image: np.ndarray, box: tuple[slice, slice], high: float) -> np.ndarray:
    """Inside ``box`` of ``image`` (:func:`edge_image`: ``(H, W)`` or ``(H, W, 3) uint8``),
    3x3-blurred: ``(h, w) bool`` Canny edges (``high`` x LOW_RATIO / ``high``; for 3 channels
    on each pixel's strongest channel gradient) dilated by a 3x3 square, computed on the box
    grown by MARGIN (clipped)."""
    crop, inner = _blurred(image, box)
    return _canny(crop, high)[inner]


def box_gradient(image: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Inside ``box`` of ``image`` (:func:`edge_image`), 3x3-blurred: the ``(h, w) float32``
    3x3 morphological gradient (the largest over channels), computed on the box grown by
    MARGIN (clipped)."""
    crop, inner = _blurred(image, box)
    return _gradient(crop)[inner]


def edge_seeds(piece: np.ndarray, edges: np.ndarray, min_seed: int) -> tuple[int, np.ndarray]:
    """Seeds of one blob: ``piece`` ``(h, w) bool`` minus ``edges``, eroded by a 3x3 square,
    4-connected parts of at least ``min_seed`` pixels. Returns (number of seeds, ``(h, w)
    int32`` seed ids 1..n in raster order of their first pixel, 0 elsewhere)."""
    core = cv2.erode((piece & ~edges).view(np.uint8), _SQUARE)
    n, ids, st, _ = cv2.connectedComponentsWithStats(core, connectivity=4, ltype=cv2.CV_32S)
    keep = st[:, cv2.CC_STAT_AREA] >= min_seed
    keep[0] = False
    lut = np.zeros(n, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return int(keep.sum()), lut[ids]


def split_by_edges(comps: np.ndarray, stats: np.ndarray, image: np.ndarray, high: float,
                   min_area: int) -> np.ndarray:
    """Split the blobs ``comps`` (``(H, W)`` int ids 1..n-1, ``stats`` their ``(n, 5)``
    OpenCV stats; each blob >= ``min_area`` pixels) along image edges (module docstring).
    ``image``: :func:`edge_image` of the frame (blurred here, once per blob box: the edges
    and, for a blob with two or more seeds, the gradient). Returns ``(H, W) int32`` instance
    ids 1..N."""
    out = np.zeros(comps.shape, np.int32)
    next_id = 1
    for c in range(1, stats.shape[0]):
        if stats[c, cv2.CC_STAT_AREA] == 0:
            continue
        box = component_box(stats, c, comps.shape)
        piece = comps[box] == c
        crop, inner = _blurred(image, box)
        n_seeds, seeds = edge_seeds(piece, _canny(crop, high)[inner], max(min_area // 2, 1))
        target = out[box]
        if n_seeds < 2:
            target[piece] = next_id
            next_id += 1
            continue
        grown = watershed(_gradient(crop)[inner], seeds, mask=piece).astype(np.int32)
        grown[piece & (grown == 0)] = 1  # unreached (8- but not 4-connected): first part
        area = np.bincount(grown[piece], minlength=n_seeds + 1)
        keep = area >= min_area
        keep[0] = False
        lut = np.zeros(n_seeds + 1, np.int32)
        lut[keep] = np.arange(next_id, next_id + int(keep.sum()), dtype=np.int32)
        target[piece] = lut[grown[piece]]
        next_id += int(keep.sum())
    return out
