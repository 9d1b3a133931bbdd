"""Evaluation metrics: per-class IoU over a whole test set, mIoU, image AUROC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

CLASS_NAMES = ("background", "target", "anomaly")


class ConfusionMatrix:
    """Accumulates a ``(n, n) int64`` confusion matrix over images (rows = ground truth)."""

    def __init__(self, n_classes: int = 3) -> None:
        self.n = n_classes
        self.matrix = np.zeros((n_classes, n_classes), np.int64)

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        """truth, pred: ``(H, W)`` integer labels in [0, n)."""
        if truth.shape != pred.shape:
            raise ValueError(f"mask {truth.shape} and prediction {pred.shape} differ in size")
        idx = truth.astype(np.int64).ravel() * self.n + pred.astype(np.int64).ravel()
        self.matrix += np.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)

    def iou(self) -> np.ndarray:
        """``(n,) float64`` IoU per class in [0, 1]; nan for a class absent in both."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return tp / union


def binary_iou(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two ``(H, W) bool`` masks."""
    return int(np.count_nonzero(truth & pred)), int(np.count_nonzero(truth | pred))


def image_auroc(labels: list[int], scores: list[float]) -> float:
    """AUROC of image anomaly scores against 0/1 labels; nan when only one class present."""
    if len(set(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std of finite values (nan, nan when none)."""
    arr = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())


AUPRO_FPR_LIMIT = 0.3  # MVTec AD's integration limit


def aupro(masks: list[np.ndarray], scores: list[np.ndarray],
          fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Area under the per-region overlap (PRO) curve up to ``fpr_limit`` false-positive rate,
    divided by ``fpr_limit`` (MVTec AD, Bergmann et al. 2021), exact over every threshold.

    masks: ``(H, W) bool`` anomaly masks; scores: same-shape float maps, per image. Regions are
    the 8-connected components of each mask. At threshold t, PRO(t) = mean over all regions of
    the share of the region's pixels with score >= t, FPR(t) = share of the normal pixels with
    score >= t; the curve (from (0, 0)) is integrated with the trapezoid rule, linearly
    interpolated at ``fpr_limit``. nan without a region or without a normal pixel."""
    import cv2

    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if len(masks) != len(scores) or any(m.shape != s.shape for m, s in zip(masks, scores)):
        raise ValueError("aupro: one score map of the same size per mask")
    flat_s, flat_w, is_normal, n_regions = [], [], [], 0
    for m, s in zip(masks, scores):
        n, comp = cv2.connectedComponents(np.asarray(m, np.uint8), connectivity=8)
        sizes = np.bincount(comp.ravel(), minlength=n).astype(np.float64)
        w = np.where(comp > 0, 1.0 / sizes[comp], 0.0)  # each region sums to 1
        flat_s.append(np.asarray(s, np.float64).ravel())
        flat_w.append(w.ravel())
        is_normal.append((comp == 0).ravel())
        n_regions += n - 1
    s, w, normal = np.concatenate(flat_s), np.concatenate(flat_w), np.concatenate(is_normal)
    if n_regions == 0 or not normal.any():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, pro, fpr = s[order], np.cumsum(w[order]) / n_regions, np.cumsum(normal[order])
    fpr = fpr / normal.sum()
    last = np.r_[s[1:] != s[:-1], True]  # the end of each group of tied scores
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:  # interpolate the point at the limit on the next segment
        j = int(keep.sum())
        t = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, pro[j - 1] + t * (pro[j] - pro[j - 1])]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / fpr_limit)
