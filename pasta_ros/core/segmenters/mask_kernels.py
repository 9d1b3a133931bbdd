"""Compiled kernels (numba) for the weight-free segmenter's per-frame passes.

:class:`~pasta_ros.core.segmenters.clusters.ClusterSegmenter` runs the same steps as its
numpy path (object mask, opening, hole filling with the background test, small components
dropped, core seeds, watershed), but each numpy step over the whole ``(H, W)`` frame (colour
bins, table lookup, ``isin``, ``flatnonzero``, ``bincount``, relabelling) becomes one pass of
these kernels, and the per-hole and per-component work visits only the boxes OpenCV's
connected-component statistics give. The results are the same, pixel for pixel and id for id
(``tests/test_segmenter_kernels.py`` checks the two paths against each other). Without numba,
``AVAILABLE`` is False and the segmenter keeps its numpy path. The steps that call these
kernels are in :mod:`.clusters_compiled`.
"""

from __future__ import annotations

import numpy as np

from pasta_ros.core.cpu_kernels import AVAILABLE, njit
from pasta_ros.core.segmenters.color_model import BITS

__all__ = ["AVAILABLE", "object_mask", "fill_enclosed", "component_stats",
           "core_mask", "paint_components", "label_boxes"]

_SHIFT = 8 - BITS


@njit(cache=True, nogil=True)
def object_mask(image, prior, lut):  # pragma: no cover - compiled
    """``(H, W, 3) uint8`` RGB, ``(H, W) float32`` prior log-odds, ``(4096,) float32``
    weighted colour log-odds -> ``(H, W) uint8`` 1 where prior + colour > 0."""
    height, width = prior.shape
    out = np.empty((height, width), np.uint8)
    for y in range(height):
        for x in range(width):
            r = np.int32(image[y, x, 0]) >> _SHIFT
            g = np.int32(image[y, x, 1]) >> _SHIFT
            b = np.int32(image[y, x, 2]) >> _SHIFT
            v = prior[y, x] + lut[(r << (2 * BITS)) | (g << BITS) | b]
            out[y, x] = 1 if v > 0 else 0
    return out


@njit(cache=True, nogil=True)
def _flood(labels, y0, x0, out, value, sy, sx, stack, c, not_c):  # pragma: no cover
    """4-connected flood of ``out`` ``(h, w) int32`` (a crop at ``(y0, x0)`` of ``labels``)
    with ``value`` from ``(sy, sx)``, over pixels whose label is not ``c`` (``not_c``) or is
    0 (background), and not yet set in ``out``. stack: ``(h * w, 2) int64`` scratch."""
    h, w = out.shape
    out[sy, sx] = value
    stack[0, 0] = sy
    stack[0, 1] = sx
    top = 1
    while top > 0:
        top -= 1
        py, px = stack[top, 0], stack[top, 1]
        for k in range(4):
            ny = py + (1 if k == 0 else -1 if k == 1 else 0)
            nx = px + (1 if k == 2 else -1 if k == 3 else 0)
            if ny < 0 or nx < 0 or ny >= h or nx >= w or out[ny, nx]:
                continue
            lab = labels[y0 + ny, x0 + nx]
            if (lab == c) if not_c else (lab != 0):
                continue
            out[ny, nx] = value
            stack[top, 0] = ny
            stack[top, 1] = nx
            top += 1


@njit(cache=True, nogil=True)
def fill_enclosed(labels, c, box, image, lut, threshold, areas):  # pragma: no cover
    """Fill, in place, the holes enclosed by component ``c`` whose mean colour log-odds is
    at least ``threshold``; returns True when a filled hole touches two components (they
    merge: the caller relabels).

    labels ``(H, W) int32`` 8-connected components of the opened mask (0 = background),
    updated in place: a filled hole takes the label of the component around it, whose
    ``areas`` ``(n,) int64`` entry grows. box: c's (x, y, w, h). A hole is a 4-connected
    background region that cannot reach the frame's edge without crossing c (found by a flood
    from the ring around c's box over every pixel that is not c); inside such a region it is
    a hole of the whole mask, the one that ``fill_holes`` fills. Its mean sums the
    ``lut`` values of its pixels in float64 in raster order, as ``np.bincount`` does.
    """
    height, width = labels.shape
    x0, y0, w, h = box[0], box[1], box[2], box[3]
    stack = np.empty((h * w, 2), np.int64)
    # reach: not c and 4-connected to the ring around the box (its edge pixels that are not c)
    reach = np.zeros((h, w), np.int32)
    for yy in range(h):
        for xx in range(w):
            edge = yy == 0 or xx == 0 or yy == h - 1 or xx == w - 1
            if edge and reach[yy, xx] == 0 and labels[y0 + yy, x0 + xx] != c:
                _flood(labels, y0, x0, reach, 1, yy, xx, stack, c, True)
    # holes: 4-connected unreached background pixels, numbered in raster order
    hole = np.zeros((h, w), np.int32)
    n_holes = 0
    for yy in range(h):
        for xx in range(w):
            if hole[yy, xx] or reach[yy, xx] or labels[y0 + yy, x0 + xx] != 0:
                continue
            n_holes += 1
            _flood(labels, y0, x0, hole, n_holes, yy, xx, stack, c, False)
    if n_holes == 0:
        return False
    total = np.zeros(n_holes + 1, np.float64)
    count = np.zeros(n_holes + 1, np.int64)
    for yy in range(h):
        for xx in range(w):
            i = hole[yy, xx]
            if i:
                y, x = y0 + yy, x0 + xx
                r = np.int32(image[y, x, 0]) >> _SHIFT
                g = np.int32(image[y, x, 1]) >> _SHIFT
                b = np.int32(image[y, x, 2]) >> _SHIFT
                total[i] += np.float64(lut[(r << (2 * BITS)) | (g << BITS) | b])
                count[i] += 1
    owner = np.zeros(n_holes + 1, np.int64)
    merge = False
    for yy in range(h):  # the component(s) around each filled hole (8-neighbours)
        for xx in range(w):
            i = hole[yy, xx]
            if i == 0 or total[i] / count[i] < threshold:
                continue
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    ny, nx = y0 + yy + dy, x0 + xx + dx
                    if ny < 0 or nx < 0 or ny >= height or nx >= width:
                        continue
                    lab = labels[ny, nx]
                    if lab == 0:
                        continue
                    if owner[i] == 0:
                        owner[i] = lab
                    elif owner[i] != lab:
                        merge = True
    for yy in range(h):
        for xx in range(w):
            i = hole[yy, xx]
            if i and owner[i] > 0:
                labels[y0 + yy, x0 + xx] = owner[i]
                areas[owner[i]] += 1
    return merge


@njit(cache=True, nogil=True)
def component_stats(labels, n):  # pragma: no cover - compiled
    """OpenCV's connected-component statistics in one pass: ``(n, 5) int32`` rows (left,
    top, width, height, area) of labels 0..n-1 of an ``(H, W) int32`` label image (absent
    labels: area 0, box (W, H, -W, -H)); row 0 (label 0, the background) is left all zero."""
    height, width = labels.shape
    x0 = np.full(n, width, np.int64)
    y0 = np.full(n, height, np.int64)
    x1 = np.full(n, -1, np.int64)
    y1 = np.full(n, -1, np.int64)
    area = np.zeros(n, np.int64)
    for y in range(height):
        for x in range(width):
            i = labels[y, x]
            if i == 0:
                continue
            area[i] += 1
            if x < x0[i]:
                x0[i] = x
            if x > x1[i]:
                x1[i] = x
            if y < y0[i]:
                y0[i] = y
            y1[i] = y
    out = np.zeros((n, 5), np.int32)
    for i in range(1, n):
        out[i, 0] = x0[i]
        out[i, 1] = y0[i]
        out[i, 2] = x1[i] - x0[i] + 1
        out[i, 3] = y1[i] - y0[i] + 1
        out[i, 4] = area[i]
    return out


@njit(cache=True, nogil=True)
def core_mask(mask, dist, core):  # pragma: no cover - compiled
    """``(h, w) uint8`` core pixels of one component's crop: distance >= ``core`` x the
    component's largest distance, that largest distance quantised down to 1/8 px (as
    ``clusters._max_per_label``). mask ``(h, w) uint8`` {0,1}, dist ``(h, w) float32``."""
    height, width = mask.shape
    top = np.int64(0)
    for y in range(height):
        for x in range(width):
            if mask[y, x]:
                level = np.int64(min(max(dist[y, x], np.float32(0)), np.float32(4095 / 8))
                                 * np.float32(8))
                if level > top:
                    top = level
    thr = np.float32(core) * np.float32(top / 8.0)
    out = np.zeros((height, width), np.uint8)
    for y in range(height):
        for x in range(width):
            if mask[y, x] and dist[y, x] >= thr:
                out[y, x] = 1
    return out


@njit(cache=True, nogil=True)
def paint_components(comps, stats, lut):  # pragma: no cover - compiled
    """``(H, W) int32`` ids ``lut[comps]``, visiting only the boxes of ``stats`` ``(n, 5)``
    (components with ``lut`` 0 stay 0)."""
    height, width = comps.shape
    out = np.zeros((height, width), np.int32)
    for c in range(1, stats.shape[0]):
        v = lut[c]
        if v == 0:
            continue
        x0, y0, w, h = stats[c, 0], stats[c, 1], stats[c, 2], stats[c, 3]
        for y in range(y0, y0 + h):
            for x in range(x0, x0 + w):
                if comps[y, x] == c:
                    out[y, x] = v
    return out


@njit(cache=True, nogil=True)
def label_boxes(ids, n):  # pragma: no cover - compiled
    """``(n+1, 4) int64`` box (y0, y1, x0, x1; exclusive ends) of each id 1..n of an
    ``(H, W)`` integer image; absent ids get ``(H, -1, W, -1)``."""
    height, width = ids.shape
    out = np.empty((n + 1, 4), np.int64)
    for i in range(n + 1):
        out[i, 0] = height
        out[i, 1] = -1
        out[i, 2] = width
        out[i, 3] = -1
    for y in range(height):
        for x in range(width):
            i = ids[y, x]
            if i <= 0 or i > n:
                continue
            if y < out[i, 0]:
                out[i, 0] = y
            out[i, 1] = y + 1
            if x < out[i, 2]:
                out[i, 2] = x
            if x + 1 > out[i, 3]:
                out[i, 3] = x + 1
    return out
