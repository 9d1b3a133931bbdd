"""Scores from decoder outputs (§3.4): semantic inference S_s, normal-prompting S_n, and
Mask-level Feature Matching (MFM) for anomaly and normal prompts; S = S + S_mfm.

Class order everywhere: 0 = prompted target (semantic classifier) / unknown foreground
(non-target classifier), 1 = non-target prompt, 2 = background (no object).

The paper writes each score as ``sum_i p_i M_i[h, w]``. S_s and S_n are returned as the
prompted class's share of the non-background classes (MaskFormer's argmax, see
:func:`class_share`); the MFM scores divide by ``max(sum_i M_i[h, w], 1)``: identical to the
paper where the masks do not overlap, a weighted mean where duplicates overlap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pasta_ros.core.icas.decoder import DecoderOutput
from pasta_ros.core.icas.mask_pooling import mask_pool

NEG = -1e4  # logit of an absent class (no prompt queries): finite so CE and softmax stay finite


def _lse_dot(content: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``(B, K, D) x (B, N, D)`` -> ``(B, K)`` logsumexp over the N prompt tokens of <q, c>."""
    if tokens.shape[1] == 0:
        return content.new_full(content.shape[:2], NEG)
    return torch.logsumexp(torch.einsum("bkd,bnd->bkn", content, tokens), dim=-1)


def class_logits(out: DecoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic logits over {Q_p, Q_ntp, Q_bg} and non-target logits over {Q_fg, Q_ntp, Q_bg},
    each ``(B, K, 3)`` for the K content queries."""
    bg = torch.einsum("bkd,bd->bk", out.content, out.bg)
    fg = torch.einsum("bkd,bd->bk", out.content, out.fg)
    ntp = _lse_dot(out.content, out.ntp)
    sem = torch.stack([_lse_dot(out.content, out.prompt), ntp, bg], -1)
    return sem, torch.stack([fg, ntp, bg], -1)


def weighted_masks(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``sum_i p_i M_i / max(sum_i M_i, 1)``: probs ``(B, K)``, masks ``(B, K, H, W)`` in
    [0, 1] -> ``(B, H, W)``."""
    num = torch.einsum("bk,bkhw->bhw", probs, masks)
    return num / masks.sum(1).clamp_min(1.0)


def class_share(logits: torch.Tensor, masks: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """MaskFormer semantic inference for class 0 against class 1.

    ``S_c = sum_i p_i(c) M_i`` for c in {0, 1} (no-object dropped, as in MaskFormer), returned
    as the share ``S_0 / (S_0 + S_1)``: logits ``(B, K, 3)``, masks ``(B, K, H, W)`` ->
    ``(B, H, W)`` in [0, 1]; 0.5 is the per-pixel argmax boundary. Dividing by the class sum
    rather than by the mask sum keeps the many no-object queries, whose masks are unsupervised,
    from diluting the score.
    """
    return class_share_probs(logits.softmax(-1), masks, eps)


def class_share_probs(p: torch.Tensor, masks: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """:func:`class_share` from class probabilities ``(B, K, 3)`` instead of logits."""
    s0 = torch.einsum("bk,bkhw->bhw", p[..., 0], masks)
    s1 = torch.einsum("bk,bkhw->bhw", p[..., 1], masks)
    return s0 / (s0 + s1 + eps)


def _spread(p: torch.Tensor, masks: torch.Tensor, objectness: torch.Tensor | None
            ) -> torch.Tensor:
    """Per-mask scores -> pixels. With ``objectness`` ``(B, K)`` (1 - p(no object) from the
    decoder), each mask counts with that weight, so the unsupervised masks of no-object
    queries do not blur the map: ``sum o p M / (sum o M + eps)``."""
    if objectness is None:
        return weighted_masks(p, masks)
    num = torch.einsum("bk,bkhw->bhw", objectness * p, masks)
    return num / (torch.einsum("bk,bkhw->bhw", objectness, masks) + 1e-4)


def mfm_anomaly(feats: torch.Tensor, masks: torch.Tensor, q_p: torch.Tensor,
                q_ntp: torch.Tensor, temperature: float = 0.05,
                objectness: torch.Tensor | None = None) -> torch.Tensor:
    """S_s^mfm for anomaly prompts.

    Args:
        feats: ``(B, C, h, w)`` target features F_t. masks: ``(B, K, H, W)`` in [0, 1].
        q_p, q_ntp: ``(N_p, C)``, ``(N_n, C)`` pooled prompt / non-target features.
        objectness: optional ``(B, K)`` mask weights (see :func:`_spread`).
    Returns:
        ``(B, H, W)``: per mask, softmax over {max_n cos(Q_p, Q_m), max_n cos(Q_ntp, Q_m)} /
        temperature, the prompt share, spread over its mask.
    """
    q_m = F.normalize(mask_pool(feats, masks), dim=-1)  # (B, K, C)
    sim_p = torch.einsum("bkc,nc->bkn", q_m, F.normalize(q_p, dim=-1)).amax(-1)
    sim_n = torch.einsum("bkc,nc->bkn", q_m, F.normalize(q_ntp, dim=-1)).amax(-1)
    p = torch.stack([sim_p, sim_n], -1).div(temperature).softmax(-1)[..., 0]
    return _spread(p, masks, objectness)


def mfm_normal(feats: torch.Tensor, masks: torch.Tensor, q_r: torch.Tensor,
               objectness: torch.Tensor | None = None) -> torch.Tensor:
    """S_n^mfm for normal prompts: ``p_i = min_j (1 - cos(Q_m^i, Q_r^j))``.

    feats ``(B, C, h, w)``; masks ``(B, K, H, W)``; q_r ``(M, C)`` mask-level embeddings of the
    normal references; objectness optional ``(B, K)``. Returns ``(B, H, W)``.
    """
    q_m = F.normalize(mask_pool(feats, masks), dim=-1)
    sim = torch.einsum("bkc,mc->bkm", q_m, F.normalize(q_r, dim=-1))
    return _spread((1.0 - sim).amin(-1).clamp_min(0.0), masks, objectness)


def objectness(logits: torch.Tensor) -> torch.Tensor:
    """``(B, K, 3)`` class logits -> ``(B, K)`` probability of not being 'no object'."""
    return 1.0 - logits.softmax(-1)[..., 2]


def feature_partition(feats: torch.Tensor, centres: torch.Tensor, temperature: float = 0.02
                      ) -> torch.Tensor:
    """Training-free masks: soft assignment of every cell to its GQS centre.

    feats ``(B, C, h, w)``; centres ``(B, K)`` flat cell indices -> ``(B, K, h, w)`` in [0, 1]
    (softmax over centres of cosine similarity / temperature).
    """
    flat = F.normalize(feats.flatten(2), dim=1)  # (B, C, hw)
    cen = torch.gather(flat, 2, centres.unsqueeze(1).expand(-1, flat.shape[1], -1))
    sim = torch.einsum("bck,bcn->bkn", cen, flat) / temperature
    return sim.softmax(1).reshape(feats.shape[0], -1, *feats.shape[-2:])
