"""The ``icas_tta`` row of ``pasta icas evaluate``: a test-time adaptation head
(:mod:`pasta_ros.core.icas.tta`) fitted per draw of k shots on the shots and copies of them
with EL-like synthetic defects (:mod:`pasta_ros.data.icas_el_defects`), encoded by the same
encoder. For the fusion gate the head is also fitted leave-one-out (without shot i and its
copies) and scores shot i and its calibration copies, like every other component; nothing of
the test set is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel
from pasta_ros.core.icas.tta import TTAConfig, TTAHead, fit_head
from pasta_ros.data.icas_el_defects import paste_el_defects

# Chosen on the ELPV dev half (BENCHMARKS.md "Test-time adaptation head").
TTA_CONFIG = TTAConfig(agg=3, knn=True, residual=True, squares=True, l2=10.0)


@dataclass(frozen=True)
class TTAOptions:
    """copies: EL-defect copies per shot to fit on (0: no ``icas_tta`` row); config: the
    head (:class:`TTAConfig`)."""

    copies: int = 4
    config: TTAConfig = TTA_CONFIG

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise PastaError(f"tta copies must be >= 0, got {self.copies}")


Copies = list[list[tuple[torch.Tensor, np.ndarray]]]


def defect_copies(model: ICASModel, images: Sequence[np.ndarray], n: int,
                  rng: np.random.Generator) -> Copies:
    """Per ``(h, w, 3) uint8`` prepared shot image, ``n`` copies with 1-2 EL-like defects:
    their features ``(1, C, h', w')`` and ``(h, w) bool`` defect masks (seeded by ``rng``)."""
    out = []
    for im in images:
        cps = []
        for _ in range(n):
            img, mask = paste_el_defects(rng, im, int(rng.integers(1, 3)))
            cps.append((model.encode([img]), mask))
        out.append(cps)
    return out


class TTAFit:
    """The head on all k shots (:attr:`head`) and, on demand, the leave-one-out heads that
    score the fusion calibration. Shots: ``(1, C, h, w)`` features, in draw order."""

    def __init__(self, shots: Sequence[torch.Tensor], copies: Copies,
                 config: TTAConfig) -> None:
        self.shots, self.copies, self.config = list(shots), copies, config
        self.head = fit_head(self.shots, copies, config)

    def leave_out(self, i: int) -> TTAHead | None:
        """The head without shot ``i`` (None when too few shots remain to fit it)."""
        keep = [j for j in range(len(self.shots)) if j != i]
        if len(keep) < (2 if self.config.knn else 1):
            return None
        return fit_head([self.shots[j] for j in keep], [self.copies[j] for j in keep],
                        self.config)
