"""The weight-free segmenter's compiled path: the steps of :mod:`.clusters`, per object.

The numpy path (``clean_mask`` then ``split_instances``) makes a dozen passes over the whole
``(H, W)`` frame, most of it belt. Here only the object mask, the opening and one labelling
touch the whole frame; everything after works on the boxes of the opened mask's components
(about a tenth of a conveyor frame):

1. holes: for each component whose box could hold ``min_area`` pixels, the background
   regions it encloses are found by a flood from the ring around its box
   (``mask_kernels.fill_enclosed``) and filled unless their mean colour looks like the belt —
   the same holes and the same decision as ``fill_holes`` + ``_reopen_background_holes``; a
   filled hole that joins two components makes one relabelling of the frame;
2. components under ``min_area`` dropped, the rest renumbered in raster order;
3. per kept component, on its box grown by one pixel: distance transform and core seeds
   (the distance to the background and the seeds of one component do not depend on the
   others); one watershed on the box of the components with two or more seeds;
4. ids numbered as ``relabel_without_small`` numbers them: unsplit components in order,
   then the watershed's unreached pixels (label ``n``), then the parts in the raster order of
   their seeds.

The result equals the numpy path's, id for id (``tests/test_segmenter_kernels.py``). The
relative-depth seeds (``seed_depth`` > 0, off by default) keep the numpy split after step 2.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.segmentation import watershed

from pasta_ros.core.segmenters.edge_split import component_box
from pasta_ros.core.segmenters.mask_kernels import (
    component_stats,
    core_mask,
    fill_enclosed,
    object_mask,
    paint_components,
)

HOLE_BACKGROUND = -2.0  # mean log-odds below which an enclosed region is real background


def clean_components(image: np.ndarray, prior: np.ndarray, lut: np.ndarray, min_area: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``clean_mask`` labelled: ``(H, W, 3) uint8`` C-contiguous RGB, ``(H, W) float32``
    patch prior log-odds, ``(4096,) float32`` weighted colour log-odds -> (``(H, W) int32``
    components 1..n-1, ``(n, 5) int32`` their stats); see :func:`filled_components`."""
    mask = object_mask(image, prior, lut)
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return filled_components(opened, image, lut, min_area)


def filled_components(opened: np.ndarray, image: np.ndarray, lut: np.ndarray, min_area: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Holes filled (colour test), components under ``min_area`` dropped: (``(H, W) int32``
    ids 1..n-1 in raster order, ``(n, 5) int32`` OpenCV-layout stats, row 0 unused)."""
    n, labels = cv2.connectedComponents(opened, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(opened.shape, np.int32), np.zeros((1, 5), np.int32)
    stats = component_stats(labels, n)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    box_area = stats[:, cv2.CC_STAT_WIDTH].astype(np.int64) * stats[:, cv2.CC_STAT_HEIGHT]
    merged = False
    for c in np.flatnonzero(box_area[1:] >= min_area) + 1:  # smaller ones cannot survive
        merged |= fill_enclosed(labels, int(c), stats[c, :4], image, lut, HOLE_BACKGROUND,
                                  areas)
    if merged:  # a filled hole joined two components: label the filled mask again
        n, labels = cv2.connectedComponents((labels > 0).view(np.uint8), connectivity=8,
                                            ltype=cv2.CV_32S)
        stats = component_stats(labels, n)
    else:
        stats[:, cv2.CC_STAT_AREA] = areas
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    new = np.zeros(n, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    comps = paint_components(labels, stats, new)
    return comps, np.concatenate([stats[:1], stats[keep]])


def split_components(comps: np.ndarray, stats: np.ndarray, core: float, min_area: int
                     ) -> np.ndarray:
    """Split kept components (``comps`` ``(H, W) int32`` 1..n-1 with their ``stats``) by a
    watershed from their core seeds (``split_instances`` with depth 0); numbered as the numpy
    path numbers them. ``(H, W) int32``.

    Seeds are found per component; the watershed then runs once on the box around every
    component with two or more seeds, as in the numpy path (its ties are broken by the
    order of all markers in that box, so one call per component would differ)."""
    n = stats.shape[0]
    multi = []  # (component, crop, piece, dist, seeds, n_seeds)
    for c in range(1, n):
        sl = component_box(stats, c, comps.shape)
        piece = (comps[sl] == c).view(np.uint8)
        dist = cv2.distanceTransform(piece, cv2.DIST_L2, 5)
        n_seeds, seeds = cv2.connectedComponents(core_mask(piece, dist, core),
                                                 connectivity=8, ltype=cv2.CV_32S)
        if n_seeds > 2:
            multi.append((c, sl, piece.view(bool), dist, seeds, n_seeds))
    lut = np.zeros(n, np.int32)
    is_multi = np.zeros(n, bool)
    is_multi[[m[0] for m in multi]] = True
    whole = np.flatnonzero(~is_multi[1:]) + 1  # kept, so each has >= min_area pixels
    lut[whole] = np.arange(1, whole.size + 1, dtype=np.int32)
    out = paint_components(comps, stats, lut)
    if multi:
        _paint_parts(out, comps.shape[1], stats, multi, whole.size + 1, min_area)
    return out


def _label_order_keys(seeds: np.ndarray, n_seeds: int, y0: int, x0: int, width: int
                      ) -> np.ndarray:
    """``(n_seeds - 1,) int64`` sort keys that give OpenCV's numbering of these seeds in a
    labelling of the whole frame: its block-based scan (2x2 blocks, two rows at a time)
    numbers components by their first 2x2 block in raster order, not their first pixel."""
    sy, sx = np.nonzero(seeds)
    block = ((sy + y0) // 2) * (width // 2 + 1) + (sx + x0) // 2
    key = np.full(n_seeds, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(key, seeds[sy, sx], block)
    return key[1:]


def _paint_parts(out: np.ndarray, width: int, stats: np.ndarray, multi: list,
                 next_id: int, min_area: int) -> None:
    """One watershed over the box of the ``multi`` components; parts numbered from
    ``next_id`` after the unreached pixels (one id for all, as label ``n`` of the numpy
    path), in the raster order of their seeds; parts under ``min_area`` dropped."""
    rows = np.array([stats[m[0], cv2.CC_STAT_TOP] for m in multi])
    cols = np.array([stats[m[0], cv2.CC_STAT_LEFT] for m in multi])
    y0, x0 = int(rows.min()), int(cols.min())
    y1 = int(max(r + stats[m[0], cv2.CC_STAT_HEIGHT] for r, m in zip(rows, multi)))
    x1 = int(max(q + stats[m[0], cv2.CC_STAT_WIDTH] for q, m in zip(cols, multi)))
    shape = (y1 - y0, x1 - x0)
    dist = np.zeros(shape, np.float32)
    markers = np.zeros(shape, np.int32)
    region = np.zeros(shape, bool)
    keys, offset = [], 0
    for _, sl, inside, d, seeds, n_seeds in multi:
        # the crop is the box grown by one pixel: its part inside the watershed box
        ys = slice(sl[0].start - y0, sl[0].stop - y0)
        xs = slice(sl[1].start - x0, sl[1].stop - x0)
        cy = slice(max(-ys.start, 0), inside.shape[0] - max(ys.stop - shape[0], 0))
        cx = slice(max(-xs.start, 0), inside.shape[1] - max(xs.stop - shape[1], 0))
        box = (slice(max(ys.start, 0), min(ys.stop, shape[0])),
               slice(max(xs.start, 0), min(xs.stop, shape[1])))
        inner = inside[cy, cx]
        dist[box][inner] = d[cy, cx][inner]
        markers[box][inner] = np.where(seeds[cy, cx] > 0, seeds[cy, cx] + offset, 0)[inner]
        region[box] |= inner
        keys.append(_label_order_keys(seeds, n_seeds, sl[0].start, sl[1].start, width))
        offset += n_seeds - 1
    grown = watershed(-dist, markers, mask=region).astype(np.int32)
    area = np.bincount(grown[region], minlength=offset + 1)
    part = np.zeros(offset + 1, np.int32)
    if area[0] >= min_area:  # pixels no seed reached (8- but not 4-connected)
        part[0], next_id = next_id, next_id + 1
    order = np.argsort(np.concatenate(keys), kind="stable") + 1
    order = order[area[order] >= min_area]
    part[order] = np.arange(next_id, next_id + order.size, dtype=np.int32)
    crop = out[y0:y1, x0:x1]
    crop[region] = part[grown[region]]
