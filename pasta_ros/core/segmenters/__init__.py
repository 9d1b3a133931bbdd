"""Class-agnostic instance masks for Phase 3; segmenters are listed in :mod:`.registry`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pasta_ros.core.errors import PastaError
from pasta_ros.core.segmenters.base import Segmenter
from pasta_ros.core.segmenters.registry import RUNTIME_FIELDS, SEGMENTERS

if TYPE_CHECKING:  # annotations only: the config schema imports this package
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.model_io import CalibratedModel


def build_segmenter(name: str, model: CalibratedModel, cfg: PastaConfig) -> Segmenter:
    """The segmenter called ``name`` (a key of ``SEGMENTERS``) for a calibrated model; with
    ``cfg.instance_split`` wrapped in the material-aware split
    (:mod:`pasta_ros.core.instance_split`), whichever segmenter it is."""
    entry = SEGMENTERS.get(name)
    if entry is None:
        raise PastaError(f"unknown segmenter {name!r}; available: {', '.join(SEGMENTERS)}")
    seg = entry.build(model, cfg)
    if not cfg.instance_split:
        return seg
    from pasta_ros.core.instance_split import MaterialSplitSegmenter
    return MaterialSplitSegmenter(seg, model.anomaly, model.background, min_area=cfg.min_area,
                                  min_separation=cfg.split_separation)


__all__ = ["RUNTIME_FIELDS", "SEGMENTERS", "Segmenter", "build_segmenter"]
