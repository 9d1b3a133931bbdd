"""Few-shot score fusion that a useless component cannot drag below the anchor score.

Several image anomaly scores (e.g. GQS+MFM, patch-kNN, the trained iCAS decoder) are fused
into one. Nothing about the test images is known, so the fusion is calibrated on the k normal
shots alone: leave-one-out (each shot scored against the other k-1) gives normal scores, and
the same shots with synthetic defects pasted on them give anomalous ones. From these:

- each component is standardised by the mean / std of its leave-one-out normal scores (so the
  scales of a cosine distance and a decoder probability become comparable);
- the *anchors* (training-free scores, trusted by default) keep weight 1; any other
  component gets weight ``clip((a_c - a_anchor - z * se) / (1 - a_anchor), 0, 1)`` from the
  calibration AUROCs ``a`` (``a_anchor``: that of the anchors' fused score; ``se``: the
  Hanley-McNeil standard error of ``a_anchor`` with the calibration's n normal and m defect
  scores; ``z``: the margin in standard errors, :data:`GAIN_MARGIN_Z`): only a component that
  separates the calibration defects better than the anchors by more than the calibration's
  sampling error is mixed in, so a random decoder (a_c ~ 0.5) gets weight 0 and the fused
  score orders the images exactly as the anchors do. A tie (both separate the synthetic
  defects perfectly, the usual case) gives weight 0 too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pasta_ros.core.errors import PastaError


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Mann-Whitney AUROC of anomalous-above-normal (ties count half); nan if a side is empty."""
    n, a = np.asarray(normal, np.float64).ravel(), np.asarray(anomalous, np.float64).ravel()
    if n.size == 0 or a.size == 0:
        return float("nan")
    diff = a[:, None] - n[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


# Margin of the gate in standard errors of the anchors' calibration AUROC (chosen on the
# ELPV dev half, BENCHMARKS.md "Fusion gate"); 0 = the gate before (any gain admits).
GAIN_MARGIN_Z = 2.0


def auroc_se(a: float, n: int, m: int) -> float:
    """Hanley-McNeil (1982) standard error of an AUROC ``a`` from ``n`` normal and ``m``
    anomalous scores: ``sqrt((a(1-a) + (m-1)(Q1-a^2) + (n-1)(Q2-a^2)) / (n m))`` with
    ``Q1 = a/(2-a)``, ``Q2 = 2a^2/(1+a)``; nan when a side is empty or ``a`` is not finite."""
    if n <= 0 or m <= 0 or not np.isfinite(a):
        return float("nan")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (n * m)
    return float(np.sqrt(max(var, 0.0)))


@dataclass(frozen=True)
class FusionWeights:
    """Per component: standardisation ``mean`` / ``std``, fusion ``weight``, and the
    calibration AUROC it was derived from (``"anchor"``: that of the anchors' fused score).
    ``anchors``: the components that keep weight 1."""

    anchors: tuple[str, ...]
    mean: dict[str, float]
    std: dict[str, float]
    weight: dict[str, float]
    calib_auroc: dict[str, float]

    def to_json(self) -> dict:
        return {"anchors": list(self.anchors), "weight": self.weight,
                "calib_auroc": self.calib_auroc}


def _standardise(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    return (np.asarray(values, np.float64) - mean) / std


def calibrate_fusion(normal: Mapping[str, np.ndarray], anomalous: Mapping[str, np.ndarray],
                     anchors: str | tuple[str, ...], margin_z: float = GAIN_MARGIN_Z,
                     ) -> FusionWeights:
    """Weights from calibration scores: ``normal[c]`` ``(n,)`` leave-one-out scores of the
    normal shots and ``anomalous[c]`` ``(m,)`` scores of the synthetic-defect shots, for every
    component c (the same keys in both, the ``anchors`` among them). The anchors keep weight 1;
    another component is weighted by how much its calibration AUROC beats that of the
    anchors' fused score by more than ``margin_z`` standard errors of the latter (0 when it
    does not; ``inf``: anchors only)."""
    if not margin_z >= 0:
        raise PastaError(f"fusion gain margin must be >= 0 standard errors, got {margin_z}")
    anchors = (anchors,) if isinstance(anchors, str) else tuple(anchors)
    if not anchors or not set(anchors) <= set(normal) or set(normal) != set(anomalous):
        raise PastaError(f"fusion components differ or lack the anchors {list(anchors)}: "
                         f"{sorted(normal)} vs {sorted(anomalous)}")
    mean, std, aucs = {}, {}, {}
    for c in normal:
        n = np.asarray(normal[c], np.float64)
        mean[c] = float(n.mean())
        spread = np.concatenate([n, np.asarray(anomalous[c], np.float64)]).std()
        std[c] = float(max(n.std(), 1e-3 * spread, 1e-12))
        aucs[c] = auroc(n, anomalous[c])
    side = lambda d: sum(_standardise(d[c], mean[c], std[c]) for c in anchors)  # noqa: E731
    aucs["anchor"] = a0 = auroc(side(normal), side(anomalous))
    a0 = a0 if np.isfinite(a0) else 0.5
    se = auroc_se(a0, len(normal[anchors[0]]), len(anomalous[anchors[0]]))
    bar = a0 + margin_z * (se if np.isfinite(se) else 0.0) if np.isfinite(margin_z) else 2.0
    weight = {}
    for c in normal:
        gain = (aucs[c] - bar) / max(1.0 - a0, 1e-3) if np.isfinite(aucs[c]) else 0.0
        weight[c] = 1.0 if c in anchors else float(np.clip(gain, 0.0, 1.0))
    return FusionWeights(anchors, mean, std, weight, aucs)


def fuse_scores(scores: Mapping[str, float | np.ndarray], w: FusionWeights
                ) -> float | np.ndarray:
    """Fused score ``sum_c weight_c (s_c - mean_c) / std_c`` (scalars or same-shape arrays);
    components of weight 0 are not read, so they may be absent."""
    out = 0.0
    for c, wc in w.weight.items():
        if wc > 0:
            out = out + wc * _standardise(scores[c], w.mean[c], w.std[c])
    return out
