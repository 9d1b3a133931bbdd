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
    """The segmenter called ``name`` for a calibrated model; with ``cfg.instance_split``
    wrapped in the material-aware split (:mod:`pasta_ros.core.instance_split`)."""
    seg = _build(name, model, cfg)
    if not cfg.instance_split:
        return seg
    from pasta_ros.core.instance_split import MaterialSplitSegmenter
    return MaterialSplitSegmenter(seg, model.anomaly, model.background, min_area=cfg.min_area,
                                  min_separation=cfg.split_separation)


def _build(name: str, model: CalibratedModel, cfg: PastaConfig) -> Segmenter:
    if name == "clusters":
        return ClusterSegmenter(model.background, model.color_log_odds, min_area=cfg.min_area)
    if name == "sam3":
        from pasta_ros.core.features import resolve_device
        from pasta_ros.core.segmenters.sam3 import Sam3Segmenter

        if not cfg.sam3_weights:
            raise PastaError("segmenter sam3 needs sam3_weights: a local SAM 3 checkpoint folder "
                             "(Hugging Face snapshot of facebook/sam3); no weights ship offline")
        return Sam3Segmenter.from_pretrained(
            cfg.sam3_weights, cfg.sam3_prompt, score_threshold=cfg.sam3_score_threshold,
            nms_iou=cfg.sam3_nms_iou, min_area=cfg.min_area, device=resolve_device(cfg.device))
    raise PastaError(f"unknown segmenter {name!r}; available: clusters, sam3")


__all__ = ["Segmenter", "ClusterSegmenter", "build_segmenter"]
