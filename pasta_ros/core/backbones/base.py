"""The one backbone interface: a normalised image batch -> a patch feature grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pasta_ros.core.errors import PastaError


class BackboneError(PastaError, RuntimeError):
    """A backbone cannot be built or loaded; the message says what was expected where."""


@dataclass(frozen=True)
class BackboneInfo:
    """Static facts about a backbone.

    stride: input pixels per feature-grid cell (patch size for ViTs).
    channels: C of the feature grid.
    mean, std: per-channel RGB normalisation applied to [0, 1] inputs.
    """

    name: str
    stride: int
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Backbone(nn.Module):
    """Frozen feature extractor.

    ``forward(x)``: x is ``(B, 3, H, W) float32``, already normalised with ``info.mean/std``,
    with H and W multiples of ``info.stride``. Returns ``(B, C, H // stride, W // stride)``
    float32 patch features (not L2-normalised).
    """

    info: BackboneInfo

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
