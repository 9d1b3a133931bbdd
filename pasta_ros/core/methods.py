"""The method registry: how a model is calibrated from baseline / reference (/ empty) sets.

``pasta`` is the paper's method (with this project's extensions, each a config field). A new
method (e.g. WaW) is a module in ``core/`` with a ``calibrate`` function of the same signature
as :func:`pasta_ros.core.calibration.calibrate`, one entry here (options named
``<method>_*``) and a test; the ``method`` config field, the CLI flag and the ROS parameter
read their choices from :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pasta_ros.core.options import Option
from pasta_ros.core.segmenters.points import AUTO, POINT_SEGMENTERS

if TYPE_CHECKING:  # annotations only: the config schema imports this module
    from pasta_ros.core.model_io import CalibratedModel


@dataclass(frozen=True)
class MethodEntry:
    calibrate: Callable[..., CalibratedModel]
    description: str
    options: tuple[Option, ...] = ()


def _calibrate_pasta(*args: Any, **kwargs: Any) -> CalibratedModel:
    from pasta_ros.core.calibration import calibrate

    return calibrate(*args, **kwargs)


def _calibrate_waw(*args: Any, **kwargs: Any) -> CalibratedModel:
    from pasta_ros.core.waw_method import calibrate

    return calibrate(*args, **kwargs)


# WaW defaults: PASTA Table III, WaW on PhenoBench (k_sphere 100, k_v 10); the rest are this
# reconstruction's choices (documented in core/waw.py and core/waw_method.py)
WAW_OPTIONS = (
    Option("waw_masks", "exg", "waw: object masks from the ExG vegetation index with point "
                               "prompts (plants), or from the config's segmenter",
           choices=("exg", "segmenter")),
    Option("waw_k_sphere", 100, "waw: hypersphere radius = distance to the k-th nearest "
                                "reference feature (density, PASTA Table III)", lo=1, hi=100000),
    Option("waw_k_v", 10, "waw: feature voting K, nearest Target-Bag features per query "
                          "(PASTA Table III)", lo=1, hi=10000),
    Option("waw_vote_share", 0.5, "waw: an object is an anomaly when fewer than this share of "
                                  "its k_v neighbours hold it in their hypersphere",
           lo=0.0, hi=1.0),
    Option("waw_min_votes", 1, "waw: popularity votes a reference feature needs to enter the "
                               "Target Feature Bag", lo=0, hi=100000),
    Option("waw_exg_threshold", 0.1, "waw exg: vegetation where ExG = 2g-r-b (chromatic) "
                                     "exceeds this", lo=-1.0, hi=2.0),
    Option("waw_point_segmenter", AUTO, "waw exg: what grows an instance from each point "
                                        "prompt: sam3 (SAM 3's point-prompted decoder, needs "
                                        "sam3_weights), watershed (weight-free), auto (sam3 "
                                        "when sam3_weights is set)",
           choices=(AUTO, *POINT_SEGMENTERS)),
    Option("waw_point_spacing", 24, "waw exg: point prompts at least this many pixels apart "
                                    "(smaller = denser prompts, more objects)", lo=1, hi=4096),
    Option("waw_crop_size", 64, "waw: masked object crops are resized to this square size "
                                "before the backbone", lo=16, hi=1024),
)

def _calibrate_pasta_object(*args: Any, **kwargs: Any) -> CalibratedModel:
    from pasta_ros.core.pasta_object import calibrate

    return calibrate(*args, **kwargs)


PASTA_OBJECT_OPTIONS = (
    Option("pasta_object_clusters", 10, "pasta_object: K of the K-Means on instance "
                                        "descriptors (pooled features + shape)", lo=2, hi=1024),
    Option("pasta_object_shape_weight", 1.0, "pasta_object: weight of the standardised shape "
                                             "(area, elongation, solidity, curvature) beside "
                                             "the unit-norm pooled features", lo=0.0, hi=100.0),
)

METHODS: dict[str, MethodEntry] = {
    "pasta": MethodEntry(_calibrate_pasta, "PASTA: patch K-Means on the baseline, clusters "
                                           "rare in the reference are anomalies, segment vote"),
    "waw": MethodEntry(_calibrate_waw, "WaW (PASTA §III-B): object masks (ExG points or a "
                                       "segmenter), masked-crop embeddings, Target Feature Bag, "
                                       "hypersphere feature vote", WAW_OPTIONS),
    "pasta_object": MethodEntry(_calibrate_pasta_object, "PASTA + object-level vote: instance "
                                                         "descriptors (pooled features + shape) "
                                                         "clustered, frequency-ratio rule",
                                PASTA_OBJECT_OPTIONS),
}
