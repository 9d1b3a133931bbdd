"""iCAS as the anomaly vote of the PASTA pipeline: instead of, or together with, the clusters.

PASTA classifies each segmented object by the share of its area on anomaly-cluster patches.
:class:`IcasVote` supplies a second patch map on the same ``(h, w)`` grid: the patches whose
iCAS score (from the prompts set on its predictor) is >= ``threshold``. The segmentation and
the vote threshold stay PASTA's; only the per-patch "anomalous" bit changes:

- ``replace``: anomalous = iCAS says so (PASTA's anomaly clusters are ignored);
- ``combine``: anomalous = an anomaly cluster OR iCAS (the union: an object PASTA calls an
  anomaly stays one, iCAS can only add).

With a normal prompt alone, the threshold is raised to just above the highest score a normal
shot reaches against the other shots (:attr:`NormalPrompt.floor`, leave-one-out), so that an
under-trained decoder that scores normal patches high cannot add them.

One encoder pass: when the iCAS encoder is PASTA's backbone with the same weights and the
predictor encodes at PASTA's input size (:meth:`ICASPredictor.share_backbone`), the pipeline
hands the vote PASTA's backbone features of the frame and the iCAS encoder does not run.

With no prompt set the vote is PASTA's alone (:meth:`IcasVote.patch_map` returns None), so a
node running with iCAS on keeps producing usable masks before anyone has prompted it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.prompting import ICASPredictor, NormalPrompt

ICAS_MODES = ("off", "replace", "combine")
# Default cell budget of the vote on shared backbone features: PASTA's 912x512 frame at stride
# 8 is 64x114 = 7296 cells, on which the decoder costs ~6x its 224x224 grid (16x28); pooled by
# 3 it is 22x38 = 836 cells, still 2x finer per side than the 224x224 pass (BENCHMARKS.md).
SHARED_MAX_CELLS = 1200


@dataclass(frozen=True)
class IcasVote:
    """predictor: holds the model and the prompts; mode: 'replace' | 'combine';
    threshold: score in (0, 1] from which a patch is anomalous; share: use the pipeline's
    backbone features when they are the encoder's (:meth:`shares_features`)."""

    predictor: ICASPredictor
    mode: str
    threshold: float = 0.5
    share: bool = True  # score on a shared backbone pass when possible (False: own encoder)

    def __post_init__(self) -> None:
        if self.mode not in ICAS_MODES[1:]:
            raise PastaError(f"icas mode must be one of {', '.join(ICAS_MODES[1:])}, "
                             f"got {self.mode!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise PastaError(f"icas threshold must be in (0, 1], got {self.threshold}")

    def shares_features(self, backbone: torch.nn.Module, input_size: tuple[int, int]) -> bool:
        """True when the vote can score on ``backbone``'s features at max input
        ``input_size`` (PASTA's pass) instead of running its own encoder: see
        :meth:`ICASPredictor.shares_features`."""
        return self.share and self.predictor.shares_features(backbone, input_size)

    def patch_map(self, image: np.ndarray, grid: tuple[int, int],
                  device: torch.device | str = "cpu", feats: torch.Tensor | None = None,
                  ) -> torch.Tensor | None:
        """``(H, W, 3) uint8`` RGB -> ``(h, w) bool`` iCAS anomaly patches on PASTA's grid, or
        None when the predictor has no prompt. The score map is resized bilinearly.
        ``feats``: the image's ``(1, C, h', w')`` encoder features from a shared backbone
        pass (:meth:`shares_features`); None: the predictor runs its own encoder."""
        normal, anomaly = self.predictor.prompts()
        if normal is None and anomaly is None:
            return None
        score, mode = self.predictor.score_grid(image, feats=feats)
        on_grid = F.interpolate(score[None, None].float(), size=grid, mode="bilinear",
                                align_corners=False)[0, 0]
        return (on_grid >= self.patch_threshold(normal if mode == "normal" else None)).to(device)

    def patch_threshold(self, normal: NormalPrompt | None) -> float:
        """The score from which a patch is anomalous: :attr:`threshold`, raised with a normal
        prompt alone to just above its leave-one-out ``floor`` (a level the normal shots
        themselves reach is no evidence of an anomaly)."""
        if normal is None or normal.floor < self.threshold:
            return self.threshold
        return float(np.nextafter(np.float32(normal.floor), np.float32(2.0)))

    def merge(self, pasta: torch.Tensor, icas: torch.Tensor | None) -> torch.Tensor:
        """PASTA's ``(h, w) bool`` anomaly patches with the iCAS ones, by :attr:`mode`."""
        if icas is None:
            return pasta
        return icas if self.mode == "replace" else pasta | icas
