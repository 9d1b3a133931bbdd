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


METHODS: dict[str, MethodEntry] = {
    "pasta": MethodEntry(_calibrate_pasta, "PASTA: patch K-Means on the baseline, clusters "
                                           "rare in the reference are anomalies, segment vote"),
}
