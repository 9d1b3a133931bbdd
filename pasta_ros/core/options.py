"""One option of a plug-in (a segmenter, a method): the registry entry declares it and the
shared config schema, the CLI flags and the node's ROS parameters are generated from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pasta_ros.core.errors import PastaError


class OptionError(PastaError, ValueError):
    """A setting is of the wrong type, out of range or not an allowed choice; the message
    names it."""


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

    def check(self, value: Any) -> Any:
        """``value`` as this option's type (an int is accepted for a float); raises
        :class:`OptionError` naming the option when it has the wrong type, is out of range or
        not an allowed choice."""
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise OptionError(f"{self.name}: expected {expected.__name__}, got {value!r}")
        if self.choices and value not in self.choices:
            raise OptionError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise OptionError(f"{self.name}: {value!r} is outside [{self.lo}, {self.hi}]")
        return value
