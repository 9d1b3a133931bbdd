"""TensorRT optimisation profiles: which min/opt/max shape range an input runs in (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pasta_ros.core.backends.base import BackendError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of one input: min/opt/max shapes, e.g. ``(1, 3, 512, 912)``."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Shape) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))


def _volume(shape: Shape) -> int:
    v = 1
    for d in shape:
        v *= d
    return v


def select_profile(shape: Shape, profiles: Sequence[Profile]) -> int:
    """Index of the profile to run ``shape`` with: among those that contain it, the one whose
    opt shape is closest (fewest elements away); ties -> the lowest index. BackendError when
    none contains it."""
    fits = [i for i, p in enumerate(profiles) if p.contains(tuple(shape))]
    if not fits:
        ranges = ", ".join(f"{p.min}..{p.max}" for p in profiles) or "none"
        raise BackendError(f"input shape {tuple(shape)} fits no optimisation profile of the "
                           f"engine ({ranges}); rebuild the engine for this size")
    return min(fits, key=lambda i: (abs(_volume(profiles[i].opt) - _volume(tuple(shape))), i))
