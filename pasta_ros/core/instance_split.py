"""Material-aware instance separation (goes beyond the paper; ``instance_split``).

A class-agnostic segmenter returns one instance for a copper piece touching a steel piece; the
vote (> v anomaly patches) then calls the whole blob an anomaly and the steel pixels become
anomaly pixels. This post-step, usable after any segmenter, looks at every instance whose
pixels fall in a spatially coherent anomaly part *and* a coherent non-anomaly part (each at
least ``min_area`` pixels), and splits it along the material boundary:

1. prior: the anomaly share among nearby object patches, upsampled bilinearly (a soft
   ``(H, W)`` anomaly probability; belt patches do not count as non-anomalous);
2. pixel accuracy: a Gaussian colour model (CIE Lab, full covariance) of each side, fitted on
   its confident pixels (prior > 0.9 / < 0.1); per pixel, colour log-likelihood ratio + the
   prior's log-odds; a median filter removes speckle;
3. the split is kept only when the two colour models are apart (Mahalanobis distance of the
   means under the pooled covariance >= ``min_separation``): a copper piece whose highlight
   fell into a steel cluster keeps one instance;
4. each side's connected parts of at least ``min_area`` pixels become instances; smaller
   fragments go to the neighbouring part. Every part must have >= 30 % of its border on
   the blob's outline (a touching object does; a highlight band inside one piece does not),
   else the instance is left whole. Fusion then votes per part.

Only instances with both sides present are visited (a few per frame): a first test on the
patch grid (an anomaly and a non-anomaly patch centre inside the instance), then the pixel
test on the instance's box, where the prior is computed (never on the full frame).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy.ndimage import find_objects

from pasta_ros.core.segmenters.clusters import relabel_without_small
from pasta_ros.core.segmenters.mask_kernels import AVAILABLE as COMPILED
from pasta_ros.core.segmenters.mask_kernels import label_boxes

PRIOR_CONFIDENT = 0.9
OUTER_SHARE = 0.3  # share of a part's border that must lie on the instance's outline


class MaterialSplitSegmenter:
    """Wraps a segmenter; splits its instances along anomaly / non-anomaly material borders.

    anomaly: ``(K,) bool`` anomaly clusters of the model (the cluster map's vote).
    """

    def __init__(self, inner, anomaly: np.ndarray, background: np.ndarray | None = None, *,
                 min_area: int = 150, min_separation: float = 4.0,
                 prior_weight: float = 1.0) -> None:
        self.inner = inner
        self.name = f"{inner.name}+material_split"
        self._anomaly = np.asarray(anomaly, bool)  # numpy lookups: cheaper than torch's here
        self._objects = None if background is None else ~np.asarray(background, bool)
        self.min_area = int(min_area)
        self.min_separation = float(min_separation)
        self.prior_weight = float(prior_weight)

    def segment(self, image: np.ndarray, cluster_map: torch.Tensor) -> np.ndarray:
        """``(H, W, 3) uint8`` + ``(h, w) int64`` -> ``(H, W) int32`` instance ids."""
        ids = self.inner.segment(image, cluster_map)
        cmap = cluster_map.cpu().numpy()
        patches = self._anomaly[cmap]
        objects = None if self._objects is None else self._objects[cmap]
        return split_by_material(ids, image, patches, objects, min_area=self.min_area,
                                 min_separation=self.min_separation,
                                 prior_weight=self.prior_weight)


def anomaly_prior(patches: np.ndarray, height: int, width: int,
                  objects: np.ndarray | None = None) -> np.ndarray:
    """``(h, w) bool`` patch map -> ``(H, W) float32`` soft anomaly probability (bilinear).

    objects: ``(h, w) bool`` patches of object (non-background) clusters. Given, the prior is
    the anomaly share among the *object* patches nearby (normalised interpolation), so the
    outline of a copper piece, where its neighbours are belt patches, stays anomalous."""
    size = (width, height)
    anom = cv2.resize(patches.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    if objects is None:
        return anom
    obj = cv2.resize((objects | patches).astype(np.float32), size,
                     interpolation=cv2.INTER_LINEAR)
    return np.where(obj > 0.05, anom / np.maximum(obj, 1e-6), anom).astype(np.float32)


def _bilinear_axis(n_out: int, n_in: int, start: int, stop: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize's INTER_LINEAR sampling of output pixels ``start..stop-1`` along one axis:
    source indices i0, i1 ``(m,) int64`` and weights of i1 ``(m,) float32``."""
    src = (np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resize_crop(grid: np.ndarray, height: int, width: int, box: tuple[slice, slice]
                 ) -> np.ndarray:
    """The ``box`` crop of ``cv2.resize(grid, (width, height), INTER_LINEAR)`` without the
    full frame: ``(h, w) float32`` grid -> ``(box rows, box cols) float32``."""
    y0, y1, wy = _bilinear_axis(height, grid.shape[0], box[0].start, box[0].stop)
    x0, x1, wx = _bilinear_axis(width, grid.shape[1], box[1].start, box[1].stop)
    g = grid.astype(np.float32)
    top = g[y0][:, x0] * (1 - wx) + g[y0][:, x1] * wx
    bottom = g[y1][:, x0] * (1 - wx) + g[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def anomaly_prior_crop(patches: np.ndarray, height: int, width: int,
                       box: tuple[slice, slice], objects: np.ndarray | None = None
                       ) -> np.ndarray:
    """The ``box`` crop of :func:`anomaly_prior` (same values), computed on the crop only."""
    anom = _resize_crop(patches, height, width, box)
    if objects is None:
        return anom
    obj = _resize_crop(objects | patches, height, width, box)
    return np.where(obj > 0.05, anom / np.maximum(obj, 1e-6), anom).astype(np.float32)


def grid_candidates(ids: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Ids with at least one anomaly and one non-anomaly patch centre (the patch grid
    ``(h, w)``); a cheap filter before the pixel test in :func:`split_by_material`."""
    h, w = patches.shape
    rows = ((np.arange(h) + 0.5) * ids.shape[0] / h).astype(np.int64)
    cols = ((np.arange(w) + 0.5) * ids.shape[1] / w).astype(np.int64)
    at = ids[rows[:, None], cols[None, :]]
    n = int(ids.max()) + 1
    anom = np.bincount(at[patches], minlength=n)
    other = np.bincount(at[~patches], minlength=n)
    ok = (anom > 0) & (other > 0)
    ok[0] = False
    return np.flatnonzero(ok)


def split_by_material(ids: np.ndarray, image: np.ndarray, patches: np.ndarray,
                      objects: np.ndarray | None = None, *, min_area: int = 150,
                      min_separation: float = 4.0, prior_weight: float = 1.0) -> np.ndarray:
    """Split mixed instances of ``ids`` (``(H, W) int32``) along material borders.

    image ``(H, W, 3) uint8`` RGB; patches ``(h, w) bool`` anomaly patch map; objects
    ``(h, w) bool`` object patches (optional, see :func:`anomaly_prior`). Returns
    ``(H, W) int32`` ids (renumbered 1..N when anything was split; else ``ids`` itself).
    """
    if ids.size == 0 or ids.max() == 0 or not patches.any():
        return ids
    h, w = ids.shape
    candidates = grid_candidates(ids, patches)
    if candidates.size == 0:
        return ids
    out = ids.copy()
    next_id = int(ids.max()) + 1
    boxes = instance_boxes(ids)
    split = False
    for i in candidates.tolist():
        box = boxes[i - 1]
        inside = ids[box] == i
        prior = anomaly_prior_crop(patches, h, w, box, objects)
        n_anom = int(np.count_nonzero(inside & (prior > 0.5)))
        if n_anom < min_area or int(inside.sum()) - n_anom < min_area:
            continue  # both sides (prior > 0.5 / <= 0.5) need min_area px
        side = material_sides(image[box], prior, inside, min_separation, prior_weight)
        if side is None:
            continue
        parts = _parts(side, inside, min_area)
        if parts is None or not _parts_reach_outside(parts, inside):
            continue
        crop = out[box]
        for k in range(2, int(parts.max()) + 1):  # part 1 keeps the old id
            crop[parts == k] = next_id
            next_id += 1
            split = True
    return relabel_without_small(out, 1) if split else ids


def instance_boxes(ids: np.ndarray) -> list[tuple[slice, slice] | None]:
    """``scipy.ndimage.find_objects`` of an ``(H, W)`` integer id image (one compiled pass
    when numba is there): entry ``i - 1`` is id i's (rows, cols) slices, None if absent."""
    if not COMPILED:
        return find_objects(ids)
    b = label_boxes(np.ascontiguousarray(ids), int(ids.max()))
    return [None if y1 < 0 else (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
            for y0, y1, x0, x1 in b[1:].tolist()]


def material_sides(rgb: np.ndarray, prior: np.ndarray, inside: np.ndarray,
                   min_separation: float, prior_weight: float) -> np.ndarray | None:
    """``(h, w) bool`` anomaly side of one instance crop, or None when the two colour models
    are not apart (Mahalanobis distance of the means < ``min_separation``)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    px = lab[inside]
    p = prior[inside]
    a_conf, t_conf = p > PRIOR_CONFIDENT, p < 1 - PRIOR_CONFIDENT
    if a_conf.sum() < 20 or t_conf.sum() < 20:
        return None
    mu_a, cov_a = _gauss(px[a_conf])
    mu_t, cov_t = _gauss(px[t_conf])
    pooled = 0.5 * (cov_a + cov_t)
    diff = mu_a - mu_t
    if float(np.sqrt(diff @ np.linalg.solve(pooled, diff))) < min_separation:
        return None
    llr = _loglik(px, mu_a, cov_a) - _loglik(px, mu_t, cov_t)
    pc = np.clip(p, 0.02, 0.98)
    score = llr + prior_weight * np.log(pc / (1 - pc))
    side = np.zeros(inside.shape, np.uint8)
    side[inside] = score > 0
    side = cv2.medianBlur(side * 255, 5) > 0
    return side & inside


def _gauss(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    cov = np.cov(x, rowvar=False) + np.eye(3, dtype=np.float64) * 4.0  # 2 Lab units floor
    return mu, cov


def _loglik(x: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = x - mu
    inv = np.linalg.inv(cov)
    return -0.5 * (np.einsum("ni,ij,nj->n", d, inv, d) + np.log(np.linalg.det(cov)))


def _parts(side: np.ndarray, inside: np.ndarray, min_area: int) -> np.ndarray | None:
    """``(h, w) int32`` parts 1..P of one instance (0 outside), or None when either side
    has no connected part of ``min_area`` px. Fragments under ``min_area`` join the part
    they touch most (nearest part by distance transform)."""
    labels = np.zeros(inside.shape, np.int32)
    n_parts = 0
    for mask in (side, inside & ~side):
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
        big = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area) + 1
        if big.size == 0:
            return None
        for c in big.tolist():
            n_parts += 1
            labels[comp == c] = n_parts
    orphan = inside & (labels == 0)
    if orphan.any():  # give each leftover pixel the label of its nearest part
        _, nearest = cv2.distanceTransformWithLabels((labels == 0).astype(np.uint8),
                                                     cv2.DIST_L2, 5,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        ys, xs = np.nonzero(labels)
        lut = np.zeros(int(nearest.max()) + 1, np.int32)
        lut[nearest[ys, xs]] = labels[ys, xs]
        labels[orphan] = lut[nearest[orphan]]
    return labels


def _parts_reach_outside(parts: np.ndarray, inside: np.ndarray) -> bool:
    """True when every part has >= ``OUTER_SHARE`` of its border on the instance's outline.

    A touching object lies at the edge of the merged blob; a highlight band or a shading
    patch inside one piece is mostly enclosed by it, and such a split is refused."""
    outside = cv2.dilate((~inside).astype(np.uint8), np.ones((3, 3), np.uint8),
                         borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)
    eroded = cv2.erode(parts.astype(np.uint16), np.ones((3, 3), np.uint8))
    border = (parts > 0) & ((eroded != parts) | outside)  # pixels next to another label
    n = int(parts.max()) + 1
    total = np.bincount(parts[border], minlength=n)
    outer = np.bincount(parts[border & outside], minlength=n)
    share = outer[1:] / np.maximum(total[1:], 1)
    return bool(np.all(share >= OUTER_SHARE))

