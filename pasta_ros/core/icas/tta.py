"""Test-time adaptation head: a linear patch classifier fitted in seconds on the k normal
shots and copies of them with synthetic defects pasted on (issue #10).

Inputs per feature cell: the encoder features locally aggregated (mean of the ``agg x agg``
neighbourhood, as the ``*_agg`` rows) and, optionally, the cell's nearest-neighbour distance
to the normal memory (for a shot: the *other* shots, so that its own cells do not match
themselves); with ``residual`` the features are replaced by their difference to that
nearest normal cell (what is *unlike* the normal memory, not what the cell looks like), and
with ``squares`` their squares are added (so that the linear head can weigh the distance
per channel, a learned diagonal metric, not only a direction of change). Positives: cells of
the defect copies covered by a pasted defect (coverage >= ``pos_cover``, or a copy's most
covered cell when none reaches it); negatives: the cells of the normal shots and the
uncovered cells of the copies. The head is an L2-regularised logistic regression on
standardised inputs with balanced classes, fitted by full-batch L-BFGS from zero
(deterministic for given inputs).
The image score is the max over cells of the head's logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pasta_ros.core.errors import PastaError


@dataclass(frozen=True)
class TTAConfig:
    """agg: neighbourhood of the aggregated input features (1: raw); knn: add the distance
    to the normal memory as an input; residual: the features minus their nearest normal
    cell instead of the features; squares: also the squared residuals; l2: weight decay on
    the standardised weights; iters: L-BFGS iterations; pos_cover / neg_cover: cell coverage
    of a defect above which a cell is positive / at or below which it may be negative;
    max_negatives: negatives kept (drawn with ``seed``)."""

    agg: int = 3
    knn: bool = True
    residual: bool = False
    squares: bool = False
    l2: float = 1e-3
    iters: int = 60
    pos_cover: float = 0.3
    neg_cover: float = 0.0
    max_negatives: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.agg < 1 or self.agg % 2 == 0:
            raise PastaError(f"tta agg must be an odd size >= 1, got {self.agg}")
        if not (0.0 < self.pos_cover <= 1.0 and 0.0 <= self.neg_cover < self.pos_cover):
            raise PastaError("tta coverages need 0 <= neg_cover < pos_cover <= 1, got "
                             f"{self.neg_cover}, {self.pos_cover}")


def aggregate(feats: torch.Tensor, size: int) -> torch.Tensor:
    """``(1, C, h, w)`` -> ``(h*w, C)`` float32 cells, each the mean of its ``size x size``
    neighbourhood (borders: of those inside the grid)."""
    if size > 1:
        feats = F.avg_pool2d(feats, size, 1, size // 2, count_include_pad=False)
    return feats.flatten(2)[0].T.float()


def cell_cover(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``(H, W) bool`` defect mask -> ``(h*w,) float32`` fraction of each feature cell it
    covers (area average onto the ``(h, w)`` grid)."""
    h, w = grid
    return cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA).reshape(-1)


def _inputs(cells: torch.Tensor, bank: torch.Tensor | None, config: TTAConfig
            ) -> torch.Tensor:
    """``(N, C)`` cells -> ``(N, D)`` head inputs (see the module doc)."""
    if bank is None:
        return cells
    d, j = torch.cdist(cells, bank).min(1)
    r = cells - bank[j] if config.residual else cells
    return torch.cat([r, r * r, d[:, None]] if config.squares else [r, d[:, None]], 1)


@dataclass
class TTAHead:
    """A fitted head: input standardisation ``mean`` / ``std`` ``(D,)``, weights ``(D,)``,
    bias, and the normal memory ``bank`` ``(M, C)`` (None without the distance input)."""

    config: TTAConfig
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: float
    bank: torch.Tensor | None

    def cell_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """``(1, C, h, w)`` target features -> ``(h, w)`` float32 logits (defect > 0)."""
        x = _inputs(aggregate(feats, self.config.agg), self.bank, self.config)
        z = ((x - self.mean) / self.std) @ self.weight + self.bias
        return z.reshape(feats.shape[-2:])

    def score(self, feats: torch.Tensor) -> float:
        """Image score: the max cell logit."""
        return float(self.cell_logits(feats).max())


def _bank(cells: Sequence[torch.Tensor]) -> torch.Tensor | None:
    return torch.cat(list(cells)) if cells else None


def fit_head(shots: Sequence[torch.Tensor], copies: Sequence[Sequence[tuple[torch.Tensor,
             np.ndarray]]], config: TTAConfig = TTAConfig()) -> TTAHead:
    """Fit the head on k normal shots ``(1, C, h, w)`` each and, per shot, its defect copies
    ``(features (1, C, h, w), mask (H, W) bool)``. With ``config.knn`` every cell's distance
    to the other shots' cells is an input (so at least 2 shots are needed); the returned head
    measures test cells against all k shots. PastaError when there are no defect cells."""
    if config.knn and len(shots) < 2:
        raise PastaError(f"the tta head's distance input needs >= 2 shots, got {len(shots)}")
    if len(copies) != len(shots):
        raise PastaError(f"{len(copies)} copy lists for {len(shots)} shots")
    cells = [aggregate(s, config.agg) for s in shots]
    pos, neg = [], []
    for i, cps in enumerate(copies):
        bank = _bank([c for j, c in enumerate(cells) if j != i]) if config.knn else None
        neg.append(_inputs(cells[i], bank, config))
        for f, mask in cps:
            x = _inputs(aggregate(f, config.agg), bank, config)
            cover = torch.from_numpy(cell_cover(mask, tuple(f.shape[-2:])))
            # a defect smaller than pos_cover of any cell: its most covered cell is positive
            bar = min(config.pos_cover, float(cover.max())) if cover.max() > 0 else 2.0
            pos.append(x[cover >= bar])
            neg.append(x[cover <= config.neg_cover])
    pos_x, neg_x = torch.cat(pos), torch.cat(neg)
    if len(pos_x) == 0:
        raise PastaError("no defect cells to fit the tta head on (defects too small?)")
    if len(neg_x) > config.max_negatives:
        rng = np.random.default_rng(config.seed)
        neg_x = neg_x[torch.from_numpy(np.sort(rng.choice(len(neg_x), config.max_negatives,
                                                          replace=False)))]
    w, b, mean, std = _logistic(pos_x, neg_x, config.l2, config.iters)
    return TTAHead(config, mean, std, w, b, _bank(cells) if config.knn else None)


def _logistic(pos: torch.Tensor, neg: torch.Tensor, l2: float, iters: int
              ) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Balanced L2 logistic regression on standardised inputs: ``(w (D,), b, mean, std)``."""
    x = torch.cat([pos, neg]).double()
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    sw = torch.where(y > 0, 0.5 / len(pos), 0.5 / len(neg)).double()
    p = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = x @ p[:-1] + p[-1]
        loss = (sw * F.binary_cross_entropy_with_logits(z, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (p[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    p = p.detach()
    return p[:-1].float(), float(p[-1]), mean.float(), std.float()
