"""The iCAS decoder: MaskFormer-style pixel decoder + in-context transformer decoder (§3.1).

Token set per target image, in this order: K content queries Q_c (GQS-selected target
features, or learned embeddings when GQS is off), N_p prompt queries Q_p and N_n non-target
prompts Q_ntp (MaskPooling of reference features under M_r and 1 - M_r), and the learnable
foreground / background tokens Q_fg, Q_bg. Each DETR layer runs self-attention over all
tokens, cross-attention to the target features F_t, and an FFN. Masks are
``sigmoid(Q_c . P_t)`` with pixel embeddings P_t at half the feature stride.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of the decoder; stored in every checkpoint and compared on load.

    in_channels: encoder channels C. hidden: token width. mask_dim: pixel-embedding width.
    layers: transformer decoder layers (paper: 6). heads: attention heads. ffn: FFN width.
    queries: content queries K (paper: 200). gqs: content queries from Greedy Query Selection
    (else learned embeddings). attn_cells: when the feature grid has more cells, the
    cross-attention memory (not the pixel embeddings) is average-pooled by an integer factor
    to at most this many cells; it bounds the cost on large frames (518x518 at stride 8 is
    65x65 = 4225 cells -> 33x33) and leaves the 28x28 training grid untouched.
    """

    in_channels: int
    hidden: int = 128
    mask_dim: int = 64
    layers: int = 6
    heads: int = 4
    ffn: int = 256
    queries: int = 48
    gqs: bool = True
    attn_cells: int = 1200

    def to_dict(self) -> dict:
        return asdict(self)


class DecoderOutput(NamedTuple):
    """mask_logits ``(B, K, 2h, 2w)``; content ``(B, K, D)``; prompt ``(B, N_p, D)``;
    ntp ``(B, N_n, D)``; fg, bg ``(B, D)``; all token embeddings L2-normalised and scaled so
    that dot products are classification logits."""

    mask_logits: torch.Tensor
    content: torch.Tensor
    prompt: torch.Tensor
    ntp: torch.Tensor
    fg: torch.Tensor
    bg: torch.Tensor


def sine_position(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """DETR 2D sine position encoding ``(h * w, dim)`` (row-major cells)."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py, px = ys[:, None] * freq[None], xs[:, None] * freq[None]
    ey = torch.cat([py.sin(), py.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    ex = torch.cat([px.sin(), px.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    pos = torch.cat([ey, ex], -1).reshape(h * w, 4 * quarter)
    return F.pad(pos, (0, dim - 4 * quarter))


class PixelDecoder(nn.Module):
    """``(B, C, h, w)`` encoder features -> (memory ``(B, D, h, w)``, pixel embeddings
    ``(B, mask_dim, 2h, 2w)``). The 3x3 convolution runs at the feature stride and only a 1x1
    runs after the 2x upsampling, which keeps 518x518 frames within the latency budget."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.hidden, 1),
                                  nn.GroupNorm(8, cfg.hidden))
        self.refine = nn.Sequential(nn.Conv2d(cfg.hidden, cfg.mask_dim, 3, padding=1),
                                    nn.GroupNorm(8, cfg.mask_dim), nn.ReLU())
        self.out = nn.Sequential(nn.Conv2d(cfg.mask_dim, cfg.mask_dim, 1), nn.ReLU(),
                                 nn.Conv2d(cfg.mask_dim, cfg.mask_dim, 1))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.proj(feats)
        x = F.interpolate(self.refine(memory), scale_factor=2.0, mode="bilinear",
                          align_corners=False)
        return memory, self.out(x)


class DecoderLayer(nn.Module):
    """DETR decoder layer (post-norm): self-attention, cross-attention to F_t, FFN."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn), nn.ReLU(), nn.Linear(cfg.ffn, d))
        self.norms = nn.ModuleList([nn.LayerNorm(d) for _ in range(3)])

    def forward(self, tokens: torch.Tensor, tok_pos: torch.Tensor, memory: torch.Tensor,
                mem_pos: torch.Tensor) -> torch.Tensor:
        q = tokens + tok_pos
        tokens = self.norms[0](tokens + self.self_attn(q, q, tokens, need_weights=False)[0])
        attn = self.cross_attn(tokens + tok_pos, memory + mem_pos, memory, need_weights=False)[0]
        tokens = self.norms[1](tokens + attn)
        return self.norms[2](tokens + self.ffn(tokens))


class InContextDecoder(nn.Module):
    """Pixel decoder + in-context transformer + mask and classification heads."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.pixel = PixelDecoder(cfg)
        self.query_proj = nn.Linear(d, d)
        self.query_embed = nn.Embedding(cfg.queries, d)  # used when gqs is off
        self.prompt_proj = nn.Sequential(nn.Linear(cfg.in_channels, d), nn.LayerNorm(d))
        self.type_embed = nn.Embedding(4, d)  # content, prompt, non-target, fg/bg
        self.fg_bg = nn.Parameter(torch.randn(2, d) * 0.02)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.layers)])
        self.mask_embed = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, cfg.mask_dim))
        self.cls_embed = nn.Linear(d, d)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def _tokens(self, memory: torch.Tensor, mem_pos: torch.Tensor, prompt: torch.Tensor,
                ntp: torch.Tensor, query_idx: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, d = memory.shape[0], self.cfg.hidden
        flat = memory.flatten(2).transpose(1, 2)  # (B, hw, D)
        if self.cfg.gqs:
            if query_idx is None:
                raise ValueError("decoder with gqs=True needs query_idx (B, K) cell indices")
            gather = query_idx.unsqueeze(-1).expand(-1, -1, d)
            content = self.query_proj(torch.gather(flat, 1, gather))
            c_pos = torch.gather(mem_pos.expand(b, -1, -1), 1, gather)
        else:
            content = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
            c_pos = torch.zeros_like(content)
        t = self.type_embed.weight
        parts = [content + t[0], self.prompt_proj(prompt) + t[1], self.prompt_proj(ntp) + t[2],
                 self.fg_bg.unsqueeze(0).expand(b, -1, -1) + t[3]]
        tokens = torch.cat(parts, 1)
        pos = torch.cat([c_pos, torch.zeros_like(tokens[:, content.shape[1]:])], 1)
        return tokens, pos

    def forward(self, feats: torch.Tensor, prompt: torch.Tensor, ntp: torch.Tensor,
                query_idx: torch.Tensor | None = None) -> DecoderOutput:
        """feats ``(B, C, h, w)`` target features F_t; prompt ``(B, N_p, C)`` and ntp
        ``(B, N_n, C)`` pooled reference features (N_p may be 0: normal prompting);
        query_idx ``(B, K) int64`` GQS cell indices (needed when ``cfg.gqs``)."""
        memory, pixels = self.pixel(feats)
        h, w = memory.shape[-2:]
        mem_pos = sine_position(h, w, self.cfg.hidden, memory.device).unsqueeze(0)
        tokens, pos = self._tokens(memory, mem_pos, prompt, ntp, query_idx)
        factor = math.ceil(math.sqrt(h * w / self.cfg.attn_cells))
        if factor > 1:
            memory = F.avg_pool2d(memory, factor, ceil_mode=True)
            mem_pos = sine_position(*memory.shape[-2:], self.cfg.hidden, memory.device)[None]
        mem = memory.flatten(2).transpose(1, 2)
        for layer in self.layers:
            tokens = layer(tokens, pos, mem, mem_pos)
        k, n_p, n_n = query_idx.shape[1] if self.cfg.gqs else self.cfg.queries, \
            prompt.shape[1], ntp.shape[1]
        content = tokens[:, :k]
        mask_logits = torch.einsum("bkd,bdhw->bkhw", self.mask_embed(content), pixels)
        emb = F.normalize(self.cls_embed(tokens), dim=-1) * self.logit_scale.exp().sqrt()
        return DecoderOutput(mask_logits, emb[:, :k], emb[:, k:k + n_p],
                             emb[:, k + n_p:k + n_p + n_n], emb[:, -2], emb[:, -1])
