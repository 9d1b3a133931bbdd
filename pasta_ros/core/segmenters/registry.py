"""The segmenter registry: the one place a segmenter is added.

An entry names a builder ``(model, cfg) -> Segmenter`` (it imports its module lazily, so heavy
dependencies load only when the segmenter is used), a one-line description and its options.
The config schema (``segmenter`` choices and the option fields), the CLI flags, the node's ROS
parameters and ``pasta config`` are all generated from :data:`SEGMENTERS`.

Adding a segmenter ``foo``: a module ``core/segmenters/foo.py`` with a class implementing
:class:`~pasta_ros.core.segmenters.base.Segmenter`, one entry below (options named ``foo_*``),
and a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pasta_ros.core.errors import PastaError
from pasta_ros.core.options import Option

if TYPE_CHECKING:  # annotations only: the config schema imports this module
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.model_io import CalibratedModel
    from pasta_ros.core.segmenters.base import Segmenter


@dataclass(frozen=True)
class SegmenterEntry:
    build: Callable[[CalibratedModel, PastaConfig], Segmenter]
    description: str
    options: tuple[Option, ...] = ()


def _build_clusters(model: CalibratedModel, cfg: PastaConfig) -> Segmenter:
    from pasta_ros.core.segmenters.clusters import ClusterSegmenter

    return ClusterSegmenter(model.background, model.color_log_odds, min_area=cfg.min_area,
                            seed_depth=cfg.seed_depth, split_edges=cfg.split_edges,
                            edge_colour=cfg.split_edges_colour, rim_prior=cfg.rim_prior,
                            split_necks=cfg.split_necks)


def _build_sam3(model: CalibratedModel, cfg: PastaConfig) -> Segmenter:
    from pasta_ros.core.features import resolve_device
    from pasta_ros.core.segmenters.sam3 import Sam3Segmenter

    if not cfg.sam3_weights:
        raise PastaError("segmenter sam3 needs sam3_weights: a local SAM 3 checkpoint folder "
                         "(Hugging Face snapshot of facebook/sam3); no weights ship offline")
    return Sam3Segmenter.from_pretrained(
        cfg.sam3_weights, cfg.sam3_prompt, score_threshold=cfg.sam3_score_threshold,
        nms_iou=cfg.sam3_nms_iou, min_area=cfg.min_area, device=resolve_device(cfg.device))


# Config fields a running pipeline takes by building its segmenter again (the node's run-time
# parameters among them; PastaPipeline.with_runtime_config).
RUNTIME_FIELDS = frozenset({"min_area", "seed_depth", "split_edges", "split_edges_colour",
                            "rim_prior", "split_necks"})

SEGMENTERS: dict[str, SegmenterEntry] = {
    "clusters": SegmenterEntry(
        _build_clusters, "weight-free: background clusters + pixel colour model, watershed "
                         "split of touching objects"),
    "sam3": SegmenterEntry(_build_sam3, "text-prompted SAM 3 from a local checkpoint", (
        Option("sam3_weights", "", "SAM 3 checkpoint folder (Hugging Face snapshot of "
                                   "facebook/sam3: config.json, model.safetensors, tokenizer "
                                   "files)"),
        Option("sam3_prompt", "objects on the conveyor belt", "SAM 3 text prompt (encoded "
                                                              "once)"),
        Option("sam3_score_threshold", 0.5, "SAM 3: keep instances whose score exceeds this",
               lo=0.0, hi=1.0),
        Option("sam3_nms_iou", 0.5, "SAM 3: masks overlapping a better one by more than this "
                                    "IoU are dropped", lo=0.0, hi=1.0),
    )),
}
