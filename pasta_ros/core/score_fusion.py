"""Few-shot score fusion that a useless component cannot drag below the anchor score.

Several image anomaly scores (e.g. GQS+MFM, patch-kNN, the trained iCAS decoder) are fused
into one. Nothing about the test images is known, so the fusion is calibrated on the k normal
shots alone: leave-one-out (each shot scored against the other k-1) gives normal scores, and
the same shots with synthetic defects pasted on them give anomalous ones. From these:

- each component is standardised by the mean / std of its leave-one-out normal scores (so the
  scales of a cosine distance and a decoder probability become comparable);
- the *anchor* (the training-free score, trusted by default) keeps weight 1; any other
  component gets weight ``clip((a_c - a_anchor) / (1 - a_anchor), 0, 1)`` from the calibration
  AUROCs ``a``: only a component that separates the calibration defects better than the anchor
  is mixed in, so a random decoder (a_c ~ 0.5) gets weight 0 and the fused score orders the
  images exactly as the anchor does.
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


@dataclass(frozen=True)
class FusionWeights:
    """Per component: standardisation ``mean`` / ``std``, fusion ``weight``, and the
    calibration AUROC it was derived from. ``anchor``: the component that keeps weight 1."""

    anchor: str
    mean: dict[str, float]
    std: dict[str, float]
    weight: dict[str, float]
    calib_auroc: dict[str, float]

    def to_json(self) -> dict:
        return {"anchor": self.anchor, "weight": self.weight, "calib_auroc": self.calib_auroc}


def calibrate_fusion(normal: Mapping[str, np.ndarray], anomalous: Mapping[str, np.ndarray],
                     anchor: str) -> FusionWeights:
    """Weights from calibration scores: ``normal[c]`` ``(n,)`` leave-one-out scores of the
    normal shots and ``anomalous[c]`` ``(m,)`` scores of the synthetic-defect shots, for every
    component c (the same keys in both, ``anchor`` among them)."""
    if anchor not in normal or set(normal) != set(anomalous):
        raise PastaError(f"fusion components differ or lack the anchor {anchor!r}: "
                         f"{sorted(normal)} vs {sorted(anomalous)}")
    mean, std, weight, aucs = {}, {}, {}, {}
    for c in normal:
        n = np.asarray(normal[c], np.float64)
        mean[c] = float(n.mean())
        spread = np.concatenate([n, np.asarray(anomalous[c], np.float64)]).std()
        std[c] = float(max(n.std(), 1e-3 * spread, 1e-12))
        aucs[c] = auroc(n, anomalous[c])
    a0 = aucs[anchor] if np.isfinite(aucs[anchor]) else 0.5
    for c in normal:
        gain = (aucs[c] - a0) / max(1.0 - a0, 1e-3) if np.isfinite(aucs[c]) else 0.0
        weight[c] = 1.0 if c == anchor else float(np.clip(gain, 0.0, 1.0))
    return FusionWeights(anchor, mean, std, weight, aucs)


def fuse_scores(scores: Mapping[str, float | np.ndarray], w: FusionWeights
                ) -> float | np.ndarray:
    """Fused score ``sum_c weight_c (s_c - mean_c) / std_c`` (scalars or same-shape arrays);
    components of weight 0 are not read, so they may be absent."""
    out = 0.0
    for c, wc in w.weight.items():
        if wc > 0:
            out = out + wc * (np.asarray(scores[c], np.float64) - w.mean[c]) / w.std[c]
    return out
