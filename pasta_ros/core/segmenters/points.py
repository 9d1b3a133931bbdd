"""The point-segmenter registry: how WaW's ExG route turns point prompts into instances.

``auto`` (the ``waw_point_segmenter`` default) is SAM 3's point-prompted decoder when
``sam3_weights`` names a checkpoint, else the weight-free watershed: the paper's WaW uses SAM
at the points; offline, the watershed seeded at the same points stands in.

Adding a point segmenter ``foo``: a class implementing
:class:`~pasta_ros.core.segmenters.base.PointSegmenter` and one entry below; the config
field's choices, the CLI flag and the ROS parameter read them from :data:`POINT_SEGMENTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pasta_ros.core.errors import PastaError

if TYPE_CHECKING:  # annotations only: the config schema imports this module
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.segmenters.base import PointSegmenter

AUTO = "auto"


@dataclass(frozen=True)
class PointSegmenterEntry:
    build: Callable[[PastaConfig], PointSegmenter]
    description: str


def _build_watershed(cfg: PastaConfig) -> PointSegmenter:
    from pasta_ros.core.exg import WatershedPoints

    return WatershedPoints(cfg.min_area)


def _build_sam3(cfg: PastaConfig) -> PointSegmenter:
    from pasta_ros.core.features import resolve_device
    from pasta_ros.core.segmenters.sam3_points import Sam3PointSegmenter

    if not cfg.sam3_weights:
        raise PastaError("waw_point_segmenter sam3 needs sam3_weights: a local SAM 3 "
                         "checkpoint folder (Hugging Face snapshot of facebook/sam3); no "
                         "weights ship offline, or use waw_point_segmenter watershed")
    return Sam3PointSegmenter.from_pretrained(cfg.sam3_weights, min_area=cfg.min_area,
                                              nms_iou=cfg.sam3_nms_iou,
                                              device=resolve_device(cfg.device))


POINT_SEGMENTERS: dict[str, PointSegmenterEntry] = {
    "watershed": PointSegmenterEntry(_build_watershed, "weight-free: one watershed basin per "
                                                       "point over the region"),
    "sam3": PointSegmenterEntry(_build_sam3, "SAM 3's point-prompted decoder (the tracker "
                                             "part of facebook/sam3) from sam3_weights"),
}


def resolve_point_segmenter(name: str, cfg: PastaConfig) -> str:
    """``auto`` -> ``sam3`` when ``cfg.sam3_weights`` is set, else ``watershed``; other
    names are returned as they are (checked by :func:`build_point_segmenter`)."""
    if name == AUTO:
        return "sam3" if cfg.sam3_weights else "watershed"
    return name


def build_point_segmenter(name: str, cfg: PastaConfig) -> PointSegmenter:
    """The point segmenter called ``name`` (``auto`` resolved first)."""
    name = resolve_point_segmenter(name, cfg)
    entry = POINT_SEGMENTERS.get(name)
    if entry is None:
        raise PastaError(f"unknown point segmenter {name!r}; available: "
                         f"{', '.join(POINT_SEGMENTERS)}")
    return entry.build(cfg)
