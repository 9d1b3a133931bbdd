"""Segmenter registry: class-agnostic instance masks for Phase 3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pasta_ros.config import PastaConfig
from pasta_ros.core.errors import PastaError
from pasta_ros.core.segmenters.base import Segmenter
from pasta_ros.core.segmenters.clusters import ClusterSegmenter

if TYPE_CHECKING:
    from pasta_ros.core.model_io import CalibratedModel


def build_segmenter(name: str, model: CalibratedModel, cfg: PastaConfig) -> Segmenter:
    """The segmenter called ``name`` for a calibrated model."""
    if name == "clusters":
        return ClusterSegmenter(model.background, model.color_log_odds, min_area=cfg.min_area)
    raise PastaError(f"unknown segmenter {name!r}; available: clusters")


__all__ = ["Segmenter", "ClusterSegmenter", "build_segmenter"]
