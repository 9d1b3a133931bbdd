"""Class-agnostic instance masks for Phase 3; segmenters are listed in :mod:`.registry`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pasta_ros.core.errors import PastaError
from pasta_ros.core.segmenters.base import Segmenter
from pasta_ros.core.segmenters.registry import SEGMENTERS

if TYPE_CHECKING:  # annotations only: the config schema imports this package
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.model_io import CalibratedModel


def build_segmenter(name: str, model: CalibratedModel, cfg: PastaConfig) -> Segmenter:
    """The segmenter called ``name`` (a key of ``SEGMENTERS``) for a calibrated model."""
    entry = SEGMENTERS.get(name)
    if entry is None:
        raise PastaError(f"unknown segmenter {name!r}; available: {', '.join(SEGMENTERS)}")
    return entry.build(model, cfg)


__all__ = ["SEGMENTERS", "Segmenter", "build_segmenter"]
