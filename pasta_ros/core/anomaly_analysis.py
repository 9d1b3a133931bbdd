"""Phase 2: which clusters are anomalies (missing from the reference set) and which are
background (dominant in empty scenes, or on the image border when no empty set exists)."""

from __future__ import annotations

import numpy as np

from pasta_ros.core.errors import CalibrationError


def distribution(counts: np.ndarray) -> np.ndarray:
    """``(K,)`` counts -> ``(K,) float64`` probabilities summing to 1."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise CalibrationError("no patches were counted: the image set is empty")
    return counts / total


def cluster_ratio(p_num: np.ndarray, p_den: np.ndarray) -> np.ndarray:
    """``R_k = p_num[k] / p_den[k]`` (PASTA eq. 3); ``inf`` where p_den is 0 and p_num is not,
    ``nan`` where both are 0 (an empty cluster: neither anomaly nor background)."""
    p_num = np.asarray(p_num, dtype=np.float64)
    p_den = np.asarray(p_den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return p_num / p_den


def anomaly_clusters(p_reference: np.ndarray, p_baseline: np.ndarray,
                     threshold: float = 0.05) -> np.ndarray:
    """``(K,) bool``: clusters present in the baseline but suppressed in the reference set,
    ``P_ref / P_base < threshold``. Empty clusters (nan ratio) are never anomalies."""
    ratio = cluster_ratio(p_reference, p_baseline)
    return np.nan_to_num(ratio, nan=np.inf) < threshold


def background_from_empty(p_empty: np.ndarray, p_baseline: np.ndarray,
                          min_ratio: float = 0.5) -> np.ndarray:
    """``(K,) bool``: background clusters given an empty-scene set.

    Empty scenes contain only belt/soil, so background clusters are at least as frequent
    there as in the baseline (``P_empty / P_base`` about 1/(background share) > 1) while
    object clusters are nearly absent (ratio ~ 0). Clusters with ratio >= ``min_ratio`` are
    background.
    """
    ratio = np.nan_to_num(cluster_ratio(p_empty, p_baseline), nan=0.0)
    return ratio >= min_ratio


def background_from_border(border_counts: np.ndarray, interior_counts: np.ndarray,
                           min_ratio: float = 1.0) -> np.ndarray:
    """``(K,) bool``: background clusters without an empty set (fallback).

    Objects on a belt or in a field lie mostly inside the frame, so the outermost ring of
    patches is enriched in background. A cluster is background when its share on the border
    is at least ``min_ratio`` times its share inside. The dominant border cluster is always
    background so the segmenter never calls the whole frame an object.
    """
    p_border = distribution(border_counts)
    p_inner = distribution(np.maximum(interior_counts, 0) + 1e-12)
    ratio = np.nan_to_num(cluster_ratio(p_border, p_inner), nan=0.0)
    background = ratio >= min_ratio
    background[int(np.argmax(p_border))] = True
    return background


def border_interior_counts(cluster_map: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster counts on the outer ring of a ``(h, w)`` int map and inside it -> two ``(K,)``."""
    return ring_counts(cluster_map, k, 0)


def ring_counts(cluster_map: np.ndarray, k: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster counts on the ring of cells ``depth`` cells in from the edge of a ``(h, w)``
    int map and on the cells deeper inside -> two ``(K,) int64`` (zeros when the map has no
    cell deeper than the ring, or for a ring ``depth`` > 0 deeper than an eighth of the short
    side: on a small grid such a ring runs through the objects, not the border)."""
    h, w = cluster_map.shape
    if min(h, w) <= 2 * depth + 2:
        return np.zeros(k, np.int64), np.zeros(k, np.int64)
    if depth and depth > min(h, w) // 8:  # deeper than the outer eighth: no longer the border
        return np.zeros(k, np.int64), np.zeros(k, np.int64)
    rows, cols = np.arange(h), np.arange(w)
    edge = np.minimum(np.minimum(rows, h - 1 - rows)[:, None],
                      np.minimum(cols, w - 1 - cols)[None, :])
    ring = np.bincount(cluster_map[edge == depth].ravel(), minlength=k)
    inner = np.bincount(cluster_map[edge > depth].ravel(), minlength=k)
    return ring, inner
