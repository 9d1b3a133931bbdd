"""The weight-free default segmenter: objects = pixels that are not background.

Pipeline per frame (all array ops, no per-pixel Python):
1. coarse object probability from the patch cluster map (background clusters -> 0),
   upsampled bilinearly to the image;
2. pixel refinement: add the colour-model log-odds of each pixel (ColorModelBuilder);
3. clean-up: opening, hole filling, dropping regions under ``min_area``;
4. touching objects split by a watershed on the distance transform, seeded by object cores
   (or, with ``seed_depth``, by distance maxima of enough relative depth); or, with
   ``split_edges``, seeded by the parts of each blob between image edges and flooded over the
   image gradient (:mod:`.edge_split`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from skimage.segmentation import watershed

from pasta_ros.core.segmenters.clusters_compiled import (
    HOLE_BACKGROUND,
    clean_components,
    split_components,
)
from pasta_ros.core.segmenters.color_model import color_index
from pasta_ros.core.segmenters.edge_split import edge_image, split_by_edges
from pasta_ros.core.segmenters.mask_kernels import AVAILABLE as COMPILED

PATCH_CONFIDENCE = 0.95  # object probability of a patch of a non-background cluster
_SQUARE = np.ones((3, 3), np.uint8)


class ClusterSegmenter:
    """Class-agnostic instances from background clusters + a pixel colour model.

    background: ``(K,) bool`` background clusters. color_log_odds: ``(4096,) float32``.
    """

    name = "clusters"

    def __init__(self, background: np.ndarray, color_log_odds: np.ndarray, *,
                 min_area: int = 150, split_core: float = 0.5, color_weight: float = 1.0,
                 seed_depth: float = 0.0, split_edges: float = 0.0,
                 edge_colour: bool = True, rim_prior: float | None = None,
                 split_necks: bool = False, compiled: bool | None = None) -> None:
        self.color_log_odds = np.asarray(color_log_odds, np.float32)
        self.min_area = int(min_area)
        self.split_core = float(split_core)
        self.seed_depth = float(seed_depth)
        self.split_edges = float(split_edges)  # Canny high threshold; 0 = distance seeds
        self.edge_colour = bool(edge_colour)  # edges on the colour image (else gray)
        self.split_necks = bool(split_necks)  # edge parts split again at distance necks
        self.color_weight = float(color_weight)
        p = PATCH_CONFIDENCE
        self._patch_logit = float(np.log(p / (1 - p)))
        self._coarse = np.where(np.asarray(background, bool), -self._patch_logit,
                                self._patch_logit).astype(np.float32)  # per cluster
        # an object patch next to a background patch (the rim); None: as any object patch
        rim = self._patch_logit if rim_prior is None else float(rim_prior)
        self.rim_prior = self._patch_logit if rim >= self._patch_logit - 1e-3 else rim
        self._lut = (self.color_weight * self.color_log_odds).astype(np.float32)
        # compiled kernels (same result as the numpy path); None: whenever numba is there
        self.compiled = COMPILED if compiled is None else bool(compiled) and COMPILED

    def coarse_prior(self, cluster_map: torch.Tensor) -> np.ndarray:
        """``(h, w) float32`` patch log-odds: +-logit(PATCH_CONFIDENCE) for object / background
        clusters; ``rim_prior`` for an object patch with a background patch among its 8
        neighbours (patches outside the grid do not count)."""
        coarse = self._coarse[cluster_map.cpu().numpy()]
        if self.rim_prior != self._patch_logit:
            obj = (coarse > 0).view(np.uint8)
            inner = cv2.erode(obj, _SQUARE, borderType=cv2.BORDER_REPLICATE)
            coarse = np.where((obj > inner), np.float32(self.rim_prior), coarse)
        return coarse

    def prior_log_odds(self, shape: tuple[int, int], cluster_map: torch.Tensor) -> np.ndarray:
        """``(H, W) float32`` patch prior: :meth:`coarse_prior` upsampled bilinearly from the
        ``(h, w)`` cluster map."""
        return cv2.resize(self.coarse_prior(cluster_map), (shape[1], shape[0]),
                          interpolation=cv2.INTER_LINEAR)

    def log_odds_terms(self, image: np.ndarray, cluster_map: torch.Tensor,
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel object log-odds terms, both ``(H, W) float32``: the patch prior
        (upsampled bilinearly) and the weighted colour evidence."""
        return (self.prior_log_odds(image.shape[:2], cluster_map),
                self._lut[color_index(image)])

    def object_log_odds(self, image: np.ndarray, cluster_map: torch.Tensor) -> np.ndarray:
        """``(H, W) float32`` per-pixel object log-odds (patch prior + colour evidence)."""
        prior, colour = self.log_odds_terms(image, cluster_map)
        return prior + colour

    def segment(self, image: np.ndarray, cluster_map: torch.Tensor) -> np.ndarray:
        """``(H, W, 3) uint8`` + ``(h, w) int64`` -> ``(H, W) int32`` instance ids."""
        if self.compiled:
            return self._segment_compiled(np.ascontiguousarray(image), cluster_map)
        prior, colour = self.log_odds_terms(image, cluster_map)
        mask = clean_mask(prior + colour > 0, self.min_area, colour)
        if self.split_edges > 0:
            _, comps, stats, _ = cv2.connectedComponentsWithStats(
                mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
            return self._split_by_edges(comps, stats, image)
        return split_instances(mask, self.split_core, self.min_area, self.seed_depth)

    def _split_by_edges(self, comps: np.ndarray, stats: np.ndarray, image: np.ndarray,
                        ) -> np.ndarray:
        """Both paths' edge split (``split_edges`` > 0) of the cleaned blobs ``comps``, each
        part split again at its necks with ``split_necks``."""
        ids = split_by_edges(comps, stats, edge_image(image, self.edge_colour),
                             self.split_edges, self.min_area)
        return split_at_necks(ids, self.split_core, self.min_area) if self.split_necks else ids

    def _segment_compiled(self, image: np.ndarray, cluster_map: torch.Tensor) -> np.ndarray:
        """:meth:`segment` through :mod:`.clusters_compiled`: the same steps and ids."""
        comps, stats = clean_components(image, self.prior_log_odds(image.shape[:2], cluster_map),
                                        self._lut, self.min_area)
        if stats.shape[0] <= 1:
            return comps
        if self.split_edges > 0:
            return self._split_by_edges(comps, stats, image)
        if self.split_core <= 0 and self.seed_depth <= 0:
            return comps
        if self.seed_depth > 0:  # relative-depth seeds: the numpy split on the clean mask
            return split_instances(comps > 0, self.split_core, self.min_area, self.seed_depth)
        return split_components(comps, stats, self.split_core, self.min_area)


def clean_mask(mask: np.ndarray, min_area: int, log_odds: np.ndarray | None = None,
               ) -> np.ndarray:
    """Open, fill holes, drop components under ``min_area`` pixels. ``(H, W) bool`` in/out.

    With ``log_odds`` (``(H, W) float32`` colour evidence), an enclosed region whose mean
    colour log-odds is below ``HOLE_BACKGROUND`` stays open: the hole of a washer shows the
    belt, while a dark shading patch on a part does not look like the belt and is filled."""
    m = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)  # a square keeps square corners exact
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    filled = fill_holes(m)
    if log_odds is not None:
        filled = _reopen_background_holes(m, filled, log_odds)
    m = filled
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def _reopen_background_holes(mask: np.ndarray, filled: np.ndarray,
                             log_odds: np.ndarray) -> np.ndarray:
    """Undo the filling of holes that look like background (vectorised over holes)."""
    holes = (filled > mask).astype(np.uint8)
    n, hole_ids = cv2.connectedComponents(holes, connectivity=4)
    if n <= 1:
        return filled
    idx = np.flatnonzero(hole_ids)
    owner = hole_ids.ravel()[idx]
    mean = (np.bincount(owner, weights=log_odds.ravel()[idx], minlength=n)
            / np.maximum(np.bincount(owner, minlength=n), 1))
    reopen = mean < HOLE_BACKGROUND
    reopen[0] = False
    return np.where(reopen[hole_ids], 0, filled).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``(H, W) uint8 {0,1}`` -> same with enclosed background regions set to 1."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return (mask.astype(bool) | holes).astype(np.uint8)


def split_instances(mask: np.ndarray, core: float, min_area: int,
                    depth: float = 0.0) -> np.ndarray:
    """Label a ``(H, W) bool`` mask into instances, splitting touching blobs.

    Seeds (``depth`` 0): the object cores, pixels whose distance to the background is at
    least ``core`` times the largest distance in their connected component. Two touching
    pieces whose neck is narrower than that give two cores; the lobes of one jagged piece do
    not (they fall below the threshold and are grown back). A small piece touching a large
    one has no core of its own (its distance stays under ``core`` x the large one's).

    Seeds (``depth`` > 0, :func:`depth_seeds`): regional maxima of the distance transform
    whose depth below their own height is at least ``depth`` (relative to that maximum, not
    to the component's), so a small disc touching a large one is seeded too.

    A watershed on the negated distance grows the seeds back to the mask, run only on the
    components with two or more seeds. ``core <= 0`` (depth 0) disables splitting. Pieces
    under ``min_area`` are dropped. Returns ``(H, W) int32``.
    """
    m = mask.astype(np.uint8)
    n, comps = cv2.connectedComponents(m, connectivity=8)
    if n <= 1 or (core <= 0 and depth <= 0):
        return relabel_without_small(comps.astype(np.int32), min_area)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    idx = np.flatnonzero(m)  # object pixels only (~10-20% of a frame)
    comp_px = comps.ravel()[idx]
    if depth > 0:
        n_seeds, seeds = depth_seeds(dist, depth, comps)
        on_seed = seeds.ravel()[idx] > 0
    else:
        dist_px = dist.ravel()[idx]
        on_seed = dist_px >= core * _max_per_label(comp_px, dist_px, n)[comp_px]
        core_mask = np.zeros(m.size, np.uint8)
        core_mask[idx[on_seed]] = 1
        n_seeds, seeds = cv2.connectedComponents(core_mask.reshape(m.shape), connectivity=8)
    pairs = np.unique(comp_px[on_seed].astype(np.int64) * n_seeds + seeds.ravel()[idx[on_seed]])
    multi = np.flatnonzero(np.bincount(pairs // n_seeds, minlength=n) >= 2)
    labels = comps.astype(np.int32)
    if multi.size:
        region = np.isin(comps, multi)
        ys, xs = np.nonzero(region)
        box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        grown = watershed(-dist[box], np.where(region[box], seeds[box], 0), mask=region[box])
        labels[box][region[box]] = n + grown[region[box]]  # above component ids: no clash
    return relabel_without_small(labels, min_area)


SEED_MIN_HEIGHT = 2.0  # px: a distance maximum lower than this (a corner, a wire) seeds nothing


def depth_seeds(dist: np.ndarray, depth: float, comps: np.ndarray) -> tuple[int, np.ndarray]:
    """Watershed seeds from the distance transform by a relative-depth rule.

    A regional maximum of height r (distance to the background) is a seed when every path to
    a higher maximum descends to r x (1 - depth) or lower (its dynamic is >= depth x r): two
    touching discs of radii r1 >= r2 whose neck has half-width s give two seeds when
    s <= (1 - depth) r2, whatever r1. Computed on the merge tree of the maxima: basins of a
    watershed from every local maximum, the saddle of each pair of touching basins, then
    Kruskal from the highest saddle (the lower top of two merging groups is decided there).
    Maxima lower than SEED_MIN_HEIGHT seed nothing. dist ``(H, W) float32`` -> (number of
    labels including 0, ``(H, W) int32`` seed labels, 0 = no seed). comps: ``(H, W)``
    connected components of the mask; the merge tree runs only on those with two or more
    local maxima.
    """
    peak = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (dist >= SEED_MIN_HEIGHT)
    n, peaks = cv2.connectedComponents(peak.astype(np.uint8), connectivity=8)
    on = peaks > 0
    pairs = np.unique(comps[on].astype(np.int64) * n + peaks[on])
    multi = np.flatnonzero(np.bincount(pairs // n) >= 2)
    if multi.size == 0:
        return n, peaks
    region = np.isin(comps, multi)
    ys, xs = np.nonzero(region)
    box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    d = dist[box]
    peaks_box = np.where(region[box], peaks[box], 0)
    basins = watershed(-d, peaks_box, mask=region[box])
    keep = _deep_peaks(basins, d, _peak_heights(peaks_box, d, n), depth)
    lut = np.zeros(n, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    seeds = lut[peaks]
    return int(keep.sum()) + 1, seeds


def _peak_heights(peaks: np.ndarray, d: np.ndarray, n: int) -> np.ndarray:
    """``(n,) float64`` height (largest distance) of each peak label (0 for label 0)."""
    height = np.zeros(n, np.float64)
    on = peaks > 0
    np.maximum.at(height, peaks[on], d[on])
    return height


def _basin_saddles(basins: np.ndarray, d: np.ndarray, n: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of touching basins (4-neighbours) and their saddle: the highest
    min(distance) across their shared border. Returns (lo, hi, saddle) arrays."""
    keys, vals = [], []
    for a, b, da, db in ((basins[:, :-1], basins[:, 1:], d[:, :-1], d[:, 1:]),
                         (basins[:-1], basins[1:], d[:-1], d[1:])):
        sel = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])
        keys.append(lo.astype(np.int64) * n + hi)
        vals.append(np.minimum(da[sel], db[sel]))
    key, val = np.concatenate(keys), np.concatenate(vals)
    if key.size == 0:
        return key, key, val
    order = np.argsort(key, kind="stable")
    key, val = key[order], val[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    uniq = key[first]
    return uniq // n, uniq % n, np.maximum.reduceat(val, first)


def _deep_peaks(basins: np.ndarray, d: np.ndarray, height: np.ndarray,
                depth: float) -> np.ndarray:
    """``(n,) bool`` peaks whose dynamic is >= depth x their height (index 0 False)."""
    n = height.shape[0]
    lo, hi, saddle = _basin_saddles(basins, d, n)
    parent = np.arange(n)
    top = np.arange(n)  # highest peak of each group (valid at the roots)
    keep = np.ones(n, bool)
    keep[0] = False

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for e in np.argsort(-saddle, kind="stable").tolist():
        ra, rb = root(int(lo[e])), root(int(hi[e]))
        if ra == rb:
            continue
        low, high = (ra, rb) if height[top[ra]] < height[top[rb]] else (rb, ra)
        if saddle[e] > (1.0 - depth) * height[top[low]]:
            keep[top[low]] = False
        parent[low] = high
    return keep


def _max_per_label(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``(n,) float32`` max of non-negative ``values`` per label in [0, n), vectorised:
    values quantised to 1/8 px, one bincount over (label, level), last occupied level."""
    # clipped before the cast: a mask with no background pixel has distance FLT_MAX everywhere
    levels = (np.clip(values, 0, 4095 / 8) * 8).astype(np.int64)  # clip first: no overflow
    hist = np.bincount(labels.astype(np.int64) * 4096 + levels, minlength=n * 4096)
    occupied = hist.reshape(n, 4096) > 0
    top = 4095 - occupied[:, ::-1].argmax(1)
    return (top / 8.0).astype(np.float32)


def split_at_necks(ids: np.ndarray, core: float, min_area: int) -> np.ndarray:
    """Each instance of ``ids`` (``(H, W) int32``, 1..N) split again by the distance-core rule
    of :func:`split_instances` (``core``, parts under ``min_area`` dropped), on its own box.
    Ids: instances in id order, the parts of a split one in :func:`split_instances` order.
    Returns ``(H, W) int32`` 1..N'."""
    from scipy.ndimage import find_objects

    out = np.zeros_like(ids)
    next_id = 1
    for i, box in enumerate(find_objects(ids), start=1):
        if box is None:
            continue
        piece = ids[box] == i
        parts = split_instances(piece, core, min_area)
        n = int(parts.max())
        target = out[box]
        if n <= 1:
            target[piece] = next_id
            next_id += 1
            continue
        target[piece] = np.where(parts[piece] > 0, parts[piece] + (next_id - 1), 0)
        next_id += n
    return out


def relabel_without_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop instances under ``min_area`` pixels (``min_area=1``: only the empty ids) and
    renumber the rest 1..N in id order (vectorised); ``(H, W) int32``."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    lut = np.zeros(areas.shape[0], np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]
