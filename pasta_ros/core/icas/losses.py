"""Training objective (§3.2): Hungarian matching of the K predicted (class, mask) pairs to the
ground-truth segments, then the prompt cross-entropy, the non-target cross-entropy and the mask
loss (binary cross-entropy + dice), as in Eq. (1). Weights follow Mask2Former (2, 5, 5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from pasta_ros.core.icas.decoder import DecoderOutput
from pasta_ros.core.icas.matching import class_logits

NO_OBJECT = 2


@dataclass(frozen=True)
class LossWeights:
    """cls: each CE term; bce, dice: mask terms; no_object: CE weight of unmatched queries."""

    cls: float = 2.0
    bce: float = 5.0
    dice: float = 5.0
    no_object: float = 0.1


@dataclass
class Target:
    """Ground truth of one target image.

    masks: ``(G, H, W)`` float {0, 1} segments at the mask-logit resolution.
    classes: ``(G,)`` int64, 0 = prompted target / unknown foreground, 1 = non-target.
    semantic: False for normal prompting (no prompt queries: no prompt CE).
    """

    masks: torch.Tensor
    classes: torch.Tensor
    semantic: bool = True


def dice_cost(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(K, P)`` logits, ``(G, P)`` {0,1} masks -> ``(K, G)`` dice loss for every pair."""
    p = logits.sigmoid()
    num = 2 * p @ masks.T
    return 1 - (num + 1) / (p.sum(-1, keepdim=True) + masks.sum(-1)[None] + 1)


def bce_cost(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(K, P)`` logits, ``(G, P)`` masks -> ``(K, G)`` mean BCE for every pair."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ masks.T + neg @ (1 - masks).T) / logits.shape[-1]


@torch.no_grad()
def hungarian(sem: torch.Tensor, ntp: torch.Tensor, logits: torch.Tensor, target: Target,
              w: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal (query, segment) pairs for one image: cost ``-p_p(c) - p_ntp(c) + L_mask``.

    sem, ntp ``(K, 3)`` logits; logits ``(K, P)`` flattened mask logits. Returns index tensors
    ``(rows, cols)`` of length G (queries, segments).
    """
    gt = target.masks.flatten(1)
    cls = -ntp.softmax(-1)[:, target.classes]
    if target.semantic:
        cls = cls - sem.softmax(-1)[:, target.classes]
    cost = w.cls * cls + w.bce * bce_cost(logits, gt) + w.dice * dice_cost(logits, gt)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def icas_loss(out: DecoderOutput, targets: list[Target], w: LossWeights = LossWeights()
              ) -> dict[str, torch.Tensor]:
    """Eq. (1) averaged over the batch. Returns ``{"total", "prompt_ce", "ntp_ce", "bce",
    "dice"}`` scalar tensors."""
    sem, ntp = class_logits(out)
    k = sem.shape[1]
    cls_w = torch.tensor([1.0, 1.0, w.no_object], device=sem.device)
    terms = {n: sem.new_zeros(()) for n in ("prompt_ce", "ntp_ce", "bce", "dice")}
    for b, tgt in enumerate(targets):
        logits = out.mask_logits[b].flatten(1)
        gt = tgt.masks.to(logits).flatten(1)
        rows, cols = hungarian(sem[b], ntp[b], logits, tgt, w)
        labels = torch.full((k,), NO_OBJECT, dtype=torch.long, device=sem.device)
        labels[rows] = tgt.classes[cols].to(sem.device)
        terms["ntp_ce"] = terms["ntp_ce"] + F.cross_entropy(ntp[b], labels, weight=cls_w)
        if tgt.semantic:
            terms["prompt_ce"] = terms["prompt_ce"] + F.cross_entropy(sem[b], labels, weight=cls_w)
        matched, gt_m = logits[rows], gt[cols]
        terms["bce"] = terms["bce"] + F.binary_cross_entropy_with_logits(matched, gt_m)
        terms["dice"] = terms["dice"] + dice_cost(matched, gt_m).diagonal().mean()
    n = max(len(targets), 1)
    terms = {name: v / n for name, v in terms.items()}
    terms["total"] = (w.cls * (terms["prompt_ce"] + terms["ntp_ce"]) + w.bce * terms["bce"]
                      + w.dice * terms["dice"])
    return terms
