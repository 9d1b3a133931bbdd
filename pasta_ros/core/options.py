"""One option of a plug-in (a segmenter, a method): the registry entry declares it and the
shared config schema, the CLI flags and the node's ROS parameters are generated from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """A flat, typed setting. ``name`` is the config field, ROS parameter and (with dashes)
    CLI flag; by convention it starts with the plug-in's name (``sam3_weights``).

    default: its type (bool, int, float, str) is the option's type.
    lo, hi: inclusive numeric range; choices: allowed strings.
    """

    name: str
    default: Any
    description: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
