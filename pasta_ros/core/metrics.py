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
