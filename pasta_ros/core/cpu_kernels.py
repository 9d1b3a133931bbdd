"""Compiled CPU kernels (numba) for the per-frame hot path: cluster assignment and fusion.

On the CPU these steps are memory-bound: every numpy/torch operation is one more pass over
an array. The fusion kernels read the ``(H, W)`` instance-id image once to collect every
per-instance statistic, then paint the label image inside the instances' boxes only; the
assignment kernel does the per-patch normalisation and the nearest-centre search over K in
two passes after the BLAS matmul. They compile on first use and are cached
on disk (``NUMBA_CACHE_DIR`` moves the cache), so a restarted node does not compile again.
When numba is not importable, :data:`AVAILABLE` is False and the callers use their numpy /
torch paths, which give the same results (tests check the two against each other).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
    AVAILABLE = True
except ImportError:  # pragma: no cover - numba is pinned in requirements.txt
    AVAILABLE = False

    def njit(*_args, **_kwargs):
        return lambda fn: fn


@njit(cache=True, nogil=True)
def instance_stats(ids, patches, patch_rows, patch_cols, n):  # pragma: no cover - compiled
    """One pass over the instance image: every per-instance statistic fusion needs.

    ids: ``(H, W)`` integer instance ids (0 = none, 1..n). patches: ``(h, w) uint8`` anomaly
    patch map (1 = anomalous). patch_rows ``(H,) intp`` / patch_cols ``(W,) intp``: the patch
    row / column that covers each pixel row / column (nearest upsampling). n: the largest id.
    Returns ``(n+1, 8) int64`` rows ``[area, anomalous pixels, x0, y0, x1, y1, sum x, sum y]``;
    absent ids have area 0 and box ``(W, H, -1, -1)``.
    """
    height, width = ids.shape
    out = np.zeros((n + 1, 8), np.int64)
    out[:, 2] = width
    out[:, 3] = height
    out[:, 4] = -1
    out[:, 5] = -1
    for y in range(height):
        prow = patches[patch_rows[y]]
        for x in range(width):
            i = ids[y, x]
            if i <= 0:
                continue
            s = out[i]
            s[0] += 1
            s[1] += prow[patch_cols[x]]
            if x < s[2]:
                s[2] = x
            if y < s[3]:
                s[3] = y
            if x > s[4]:
                s[4] = x
            s[5] = y
            s[6] += x
            s[7] += y
    return out


@njit(cache=True, nogil=True)
def paint_boxes(ids, classes, boxes):  # pragma: no cover - compiled
    """``(H, W)`` ids -> ``(H, W) uint8`` labels ``classes[id]``, visiting only the boxes.

    classes: ``(n+1,) uint8``; boxes: ``(n+1, 4) int64`` (x0, y0, x1, y1 inclusive, -1 for
    absent ids) from :func:`instance_stats`. The output starts as zeros (background, pages
    the OS hands out already zeroed), so the cost follows the objects' boxes, not the frame.
    """
    height, width = ids.shape
    out = np.zeros((height, width), np.uint8)
    for i in range(1, classes.shape[0]):
        x0, y0, x1, y1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        if x1 < 0:
            continue
        c = classes[i]
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                if ids[y, x] == i:
                    out[y, x] = c
    return out


@njit(cache=True, nogil=True)
def nearest_center(x, products, c_sq):  # pragma: no cover - compiled
    """Nearest centre of each L2-normalised column of ``x``.

    x: ``(C, N) float32`` features (not normalised); products: ``(K, N) float32`` = centers @ x;
    c_sq: ``(K,) float32`` squared centre norms. Minimises ``||c||^2 - 2 c.x / ||x||``, the
    squared distance to the normalised column up to a constant. Returns ``(N,) int64``; ties go
    to the lowest index.
    """
    channels, count = x.shape
    sq = np.zeros(count, np.float32)
    for c in range(channels):
        for j in range(count):
            sq[j] += x[c, j] * x[c, j]
    scale = np.empty(count, np.float32)
    for j in range(count):
        scale[j] = -2.0 / np.sqrt(max(sq[j], np.float32(1e-24)))
    best = np.empty(count, np.float32)
    out = np.zeros(count, np.int64)
    for j in range(count):
        best[j] = c_sq[0] + products[0, j] * scale[j]
    for k in range(1, products.shape[0]):
        for j in range(count):
            v = c_sq[k] + products[k, j] * scale[j]
            if v < best[j]:
                best[j] = v
                out[j] = k
    return out
