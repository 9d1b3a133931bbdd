"""MaskPooling: the mean feature under a (soft) mask, per mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_pool(features: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Masked average of features.

    Args:
        features: ``(B, C, h, w)`` float.
        masks: ``(B, N, H, W)`` float weights in [0, 1] (any size: resized to ``(h, w)`` with
            area averaging when larger, bilinear when smaller).
    Returns:
        ``(B, N, C)``: ``sum(m * f) / sum(m)`` per mask; zeros for an all-zero mask.
    """
    h, w = features.shape[-2:]
    m = masks.float()
    if m.shape[-2:] != (h, w):
        big = m.shape[-2] >= h and m.shape[-1] >= w
        m = (F.adaptive_avg_pool2d(m, (h, w)) if big
             else F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False))
    num = torch.einsum("bnhw,bchw->bnc", m, features)
    return num / m.sum((-2, -1)).unsqueeze(-1).clamp_min(eps)


def prompt_tokens(features: torch.Tensor, masks: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt and non-target prompt embeddings of reference images.

    Args:
        features: ``(R, C, h, w)`` reference features (R reference images).
        masks: ``(R, H, W)`` float prompt masks M_r (1 = prompted region).
    Returns:
        ``(Q_p, Q_ntp)``, each ``(R, C)``: pooled under M_r and under 1 - M_r.
    """
    both = torch.stack([masks.float(), 1.0 - masks.float()], dim=1)
    pooled = mask_pool(features, both)
    return pooled[:, 0], pooled[:, 1]
