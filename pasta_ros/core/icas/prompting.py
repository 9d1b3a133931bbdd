"""The four prompting modes (§3.4, Table 9) as a stateful numpy-in, numpy-out predictor.

(a) normal prompting: k normal images -> anomaly map, masks and an image score;
(b) anomaly prompting: one image + its anomaly mask -> the same kind of anomaly elsewhere;
(c) interactive: points / boxes on an image become area masks (a disk per click, the box
    rectangle), used as an anomaly prompt on that image;
(d) both prompts together: the mean of the (a) and (b) maps.

Scores are ``(S + S_mfm) / 2`` in [0, 1] so one threshold (default 0.5) applies to every mode;
MFM weighs each mask by its objectness (1 - p(no object)) from the decoder.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.mask_pooling import mask_pool, prompt_tokens
from pasta_ros.core.icas.matching import (
    class_logits,
    class_share_probs,
    mfm_anomaly,
    mfm_normal,
)
from pasta_ros.core.icas.model import (
    ICASModel,
    default_checkpoint,
    describe_mismatch,
    load_decoder,
    load_icas_model,
    read_checkpoint,
)


@dataclass(frozen=True)
class AnomalyPrompt:
    """q_p, q_ntp ``(N, C)``: features pooled under M_r and 1 - M_r of N prompt images;
    grid: their ``(h, w)`` feature grid (None: unknown)."""

    backbone: str
    input_size: tuple[int, int]
    q_p: torch.Tensor
    q_ntp: torch.Tensor
    grid: tuple[int, int] | None = None

    @property
    def token_counts(self) -> tuple[int, int]:
        """(N_p, N_n) tokens the decoder receives with this prompt."""
        return int(self.q_p.shape[0]), int(self.q_ntp.shape[0])


@dataclass(frozen=True)
class NormalPrompt:
    """ntp ``(k, C)``: whole-image pooled features of k normal shots; q_r ``(k * K, C)``:
    mask-level embeddings of their potential masks (for MFM); floor: the highest score any
    shot reaches against the other k - 1 (leave-one-out; 0 for one shot), the level a normal
    image already attains, so a vote threshold below it marks normal patches; grid: the
    first shot's ``(h, w)`` feature grid (None: unknown)."""

    backbone: str
    input_size: tuple[int, int]
    ntp: torch.Tensor
    q_r: torch.Tensor
    floor: float = 0.0
    grid: tuple[int, int] | None = None

    @property
    def token_counts(self) -> tuple[int, int]:
        """(N_p, N_n) tokens the decoder receives with this prompt."""
        return 0, int(self.ntp.shape[0])


@dataclass(frozen=True)
class ICASResult:
    """score ``(H, W) float32`` in [0, 1]; mask ``(H, W) bool`` (score >= threshold);
    image_score: max of the score map; mode: 'normal' | 'anomaly' | 'both'."""

    score: np.ndarray
    mask: np.ndarray
    image_score: float
    mode: str


class DecoderRuntime(Protocol):
    """Another implementation of ``model.decoder`` for scoring frames (an ONNX Runtime graph,
    :class:`pasta_ros.export.icas_decoder.OrtDecoder`; built above core and handed in).

    ``__call__(feats (1, C, h, w), prompt (1, N_p, C), ntp (1, N_n, C), idx (1, K) int64)``
    returns ``(masks (1, K, 2h, 2w) in [0, 1], sem_probs (1, K, 3), ntp_probs (1, K, 3))``
    float32, or None when it has no graph for these shapes yet (it may build one meanwhile;
    the torch decoder scores that frame). ``prepare(grid, n_prompt, n_ntp)`` builds the graph
    for those shapes now; ``reset(model)`` forgets every graph (new decoder weights)."""

    def __call__(self, feats: torch.Tensor, prompt: torch.Tensor, ntp: torch.Tensor,
                 idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        ...

    def prepare(self, grid: tuple[int, int], n_prompt: int, n_ntp: int) -> None:
        ...

    def reset(self, model: ICASModel) -> None:
        ...


@torch.no_grad()
def decode(model: ICASModel, feats: torch.Tensor, prompt: torch.Tensor, ntp: torch.Tensor,
           runtime: DecoderRuntime | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GQS + decoder: ``(B, C, h, w)`` features, prompt ``(B, N_p, C)`` and non-target
    ``(B, N_n, C)`` tokens -> masks ``(B, K, 2h, 2w)`` in [0, 1], semantic and non-target
    class probabilities ``(B, K, 3)`` (target/fg, non-target, no object). ``runtime``: used
    for single images when it has a graph for these shapes, else the torch decoder runs."""
    idx = model.queries(feats)
    if runtime is not None and idx is not None and feats.shape[0] == 1:
        out = runtime(feats, prompt, ntp, idx)
        if out is not None:
            return out
    out = model.decoder(feats, prompt, ntp, idx)
    sem, non = class_logits(out)
    return out.mask_logits.sigmoid(), sem.softmax(-1), non.softmax(-1)


def anomaly_prompt(model: ICASModel, feats: torch.Tensor, masks: torch.Tensor,
                   negative: torch.Tensor | None = None) -> AnomalyPrompt:
    """feats ``(N, C, h, w)`` of N prompt images; masks ``(N, H, W)`` float in [0, 1];
    negative: optional ``(N, H, W)`` areas marked as *not* the target (negative clicks). Each
    nonempty one adds a non-target token pooled under it, next to the one under 1 - M_r, so
    the decoder and MFM see explicitly what the target is not."""
    if masks.flatten(1).amax(1).min() <= 0:
        raise PastaError("empty prompt mask: mark at least one pixel of the anomaly")
    q_p, q_ntp = prompt_tokens(feats, masks.to(feats))
    if negative is not None:
        neg = negative.to(feats)
        keep = neg.flatten(1).amax(1) > 0
        if keep.any():
            q_ntp = torch.cat([q_ntp, mask_pool(feats[keep], neg[keep, None])[:, 0]])
    return AnomalyPrompt(model.arch.backbone, model.input_size, q_p, q_ntp,
                         tuple(feats.shape[-2:]))


@torch.no_grad()
def normal_prompt(model: ICASModel, feats: Sequence[torch.Tensor], *, calibrate: bool = True
                  ) -> NormalPrompt:
    """k normal shots, each ``(1, C, h, w)`` (sizes may differ) -> NormalPrompt; ``calibrate``:
    compute its leave-one-out ``floor`` (k more decoder passes)."""
    if len(feats) == 0:
        raise PastaError("normal prompting needs at least one normal image (zero shots given)")
    ntp = torch.cat([f.mean((-2, -1)) for f in feats])
    q_r = []
    for f in feats:
        out = model.decoder(f, f.new_zeros(1, 0, f.shape[1]), ntp[None], model.queries(f))
        q_r.append(mask_pool(f, out.mask_logits.sigmoid())[0])
    arch = model.arch
    floor = 0.0
    if calibrate and len(feats) > 1:  # the others' tokens, as computed with all k shots
        for i, f in enumerate(feats):
            keep = [j for j in range(len(feats)) if j != i]
            loo = NormalPrompt(arch.backbone, model.input_size, ntp[keep],
                               torch.cat([q_r[j] for j in keep]))
            floor = max(floor, float(score_normal(model, f, loo).max()))
    return NormalPrompt(arch.backbone, model.input_size, ntp, torch.cat(q_r), floor,
                        tuple(feats[0].shape[-2:]))


@torch.no_grad()
def score_anomaly(model: ICASModel, feats: torch.Tensor, prompt: AnomalyPrompt,
                  mfm: bool = True, semantic: bool = True,
                  runtime: DecoderRuntime | None = None) -> torch.Tensor:
    """``(B, C, h, w)`` target features -> ``(B, 2h, 2w)`` anomaly-prompt score in [0, 1]:
    S_s (Q_p against Q_ntp) and S_mfm, masks weighted by objectness (1 - p(no object))."""
    b = feats.shape[0]
    masks, sem, _ = decode(model, feats, prompt.q_p[None].expand(b, -1, -1),
                           prompt.q_ntp[None].expand(b, -1, -1), runtime)
    parts = [class_share_probs(sem, masks)] if semantic else []
    if mfm:
        parts.append(mfm_anomaly(feats, masks, prompt.q_p, prompt.q_ntp,
                                 objectness=1.0 - sem[..., 2]))
    return torch.stack(parts).mean(0)


@torch.no_grad()
def score_normal(model: ICASModel, feats: torch.Tensor, prompt: NormalPrompt,
                 mfm: bool = True, semantic: bool = True,
                 runtime: DecoderRuntime | None = None) -> torch.Tensor:
    """``(B, C, h, w)`` target features -> ``(B, 2h, 2w)`` normal-prompting score in [0, 1]:
    S_n (unknown foreground Q_fg against Q_ntp) and S_n^mfm, masks weighted by objectness."""
    b = feats.shape[0]
    masks, _, non = decode(model, feats, feats.new_zeros(b, 0, feats.shape[1]),
                           prompt.ntp[None].expand(b, -1, -1), runtime)
    parts = [class_share_probs(non, masks)] if semantic else []
    if mfm:
        parts.append(mfm_normal(feats, masks, prompt.q_r,
                                objectness=1.0 - non[..., 2]).clamp(0, 1))
    return torch.stack(parts).mean(0)


def area_mask(shape: tuple[int, int], points: Sequence[Sequence[float]] = (),
              boxes: Sequence[Sequence[float]] = (), radius: float | None = None) -> np.ndarray:
    """Interactive prompts -> ``(H, W) float32`` area mask: a disk of ``radius`` pixels
    (default 4% of the short side, at least 4 px) per ``(x, y)`` point, the filled rectangle
    per ``(x0, y0, x1, y1)`` box. Raises PastaError when nothing lands inside the image."""
    h, w = shape
    r = radius if radius is not None else max(4.0, 0.04 * min(h, w))
    m = np.zeros((h, w), np.uint8)
    for x, y in points:
        cv2.circle(m, (int(round(x)), int(round(y))), int(round(r)), 1, -1)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(m, (int(round(min(x0, x1))), int(round(min(y0, y1)))),
                      (int(round(max(x0, x1))), int(round(max(y0, y1)))), 1, -1)
    if not m.any():
        raise PastaError(f"no point or box lies inside the {w}x{h} image")
    return m.astype(np.float32)


def negative_mask(shape: tuple[int, int], points: Sequence[Sequence[float]] = (),
                  radius: float | None = None) -> np.ndarray | None:
    """Negative clicks -> ``(H, W) float32`` area (disks as in :func:`area_mask`), or None when
    there are none."""
    return area_mask(shape, points, (), radius) if len(points) else None


class ICASPredictor:
    """Stateful wrapper: set prompts once, then :meth:`predict` images.

    Images are ``(H, W, 3) uint8`` RGB of any size (resized to the model's network size);
    prompt masks are ``(H, W)`` with the size of their image, nonzero = prompted region.
    """

    def __init__(self, model: ICASModel, *, threshold: float = 0.5, mfm: bool = True) -> None:
        self.model = model.eval()
        self.threshold = float(threshold)
        self.mfm = mfm
        self.anomaly: AnomalyPrompt | None = None
        self.normal: NormalPrompt | None = None
        # backbones compared with the encoder: id -> (weak reference, same weights)
        self._same_weights: dict[int, tuple[weakref.ref, bool]] = {}
        self.max_cells = 0  # > 0: features average-pooled to at most this many cells
        self.runtime: DecoderRuntime | None = None  # scores frames when set (use_runtime)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, *, weights: str = "",
                        device: str = "cpu", threshold: float = 0.5) -> ICASPredictor:
        """A predictor for a checkpoint file (None: the shipped one, :func:`default_checkpoint`);
        ``weights``: encoder weights where the checkpoint's backbone needs them."""
        return cls(load_icas_model(path or default_checkpoint(), weights, device),
                   threshold=threshold)

    # -- model ----------------------------------------------------------------------------
    def use_runtime(self, runtime: DecoderRuntime | None) -> None:
        """Score frames with ``runtime`` (None: the torch decoder). Prompts encoded from now
        on prepare its graph for their grid and token counts, so a frame of the same size
        does not wait for one; prompts set already are prepared now."""
        self.runtime = runtime
        for prompt in (self.normal, self.anomaly):
            if prompt is not None:
                self._prepare_runtime(prompt)

    def _prepare_runtime(self, prompt: AnomalyPrompt | NormalPrompt) -> None:
        """Have the runtime (if any) build its graph for ``prompt``'s grid and tokens."""
        grid = getattr(prompt, "grid", None)  # prompts pickled before grid existed: None
        if self.runtime is not None and grid is not None:
            self.runtime.prepare(grid, *prompt.token_counts)

    def load_checkpoint(self, path: str, *, allow_arch_change: bool = False) -> None:
        """Swap in new decoder weights. A checkpoint of another architecture raises PastaError
        and leaves model and prompts as they were (prompts are dropped only when
        ``allow_arch_change`` builds a new model)."""
        ckpt = read_checkpoint(path)
        if ckpt.arch != self.model.arch:
            if not allow_arch_change:
                raise PastaError(f"checkpoint {path} has another architecture "
                                 f"({describe_mismatch(ckpt.arch, self.model.arch)}); "
                                 "the loaded model and prompts are kept")
            model = ICASModel(ckpt.arch)
            load_decoder(model, ckpt, str(path))
            self.model, self.anomaly, self.normal = model.eval(), None, None
            self._same_weights = {}  # a new encoder: compare again
        else:
            load_decoder(self.model, ckpt, str(path))
        if self.runtime is not None:  # its graphs hold the old weights
            self.runtime.reset(self.model)

    # -- one encoder pass: scoring on another component's backbone features ----------------
    def same_weights(self, backbone: nn.Module) -> bool:
        """True when ``backbone`` (a registry backbone, or an exported one's ``source``) is
        the iCAS encoder's architecture with equal weights, so its features are the ones this
        model was prompted with. Compared once per backbone object (a few ms; remembered
        while that object lives)."""
        source = getattr(backbone, "source", backbone)
        known = self._same_weights.get(id(source))
        if known is not None and known[0]() is source:
            return known[1]
        mine, theirs = self.model.encoder.state_dict(), source.state_dict()
        same = (getattr(source, "info", None) is not None
                and source.info.name == self.model.encoder.info.name
                and mine.keys() == theirs.keys()
                and all(mine[k].shape == theirs[k].shape
                        and torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine))
        self._same_weights = {i: e for i, e in self._same_weights.items() if e[0]() is not None}
        self._same_weights[id(source)] = (weakref.ref(source), same)
        return same

    def shares_features(self, backbone: nn.Module, input_size: tuple[int, int]) -> bool:
        """True when ``backbone`` run at max input ``(W, H) = input_size`` gives the
        features this predictor would compute itself: same weights and the same encode size
        (:attr:`ICASModel.input_size`, see :meth:`share_backbone`)."""
        return tuple(input_size) == self.model.input_size and self.same_weights(backbone)

    def share_backbone(self, backbone: nn.Module, input_size: tuple[int, int],
                       max_cells: int = 0) -> bool:
        """Encode at ``input_size`` from now on when ``backbone`` has the encoder's weights,
        so that frames can be scored on that backbone's features (one encoder pass per frame
        in the pipeline); ``max_cells`` > 0: the decoder sees those features average-pooled
        by the smallest integer factor that leaves at most that many cells (the decoder's
        cost grows with the cells; prompts and frames alike). Prompts set before with another
        size or pooling are dropped. Returns whether the features are shared; False (and
        nothing changed) for another backbone."""
        if max_cells < 0:
            raise PastaError(f"max_cells must be >= 0 (0: no pooling), got {max_cells}")
        if not self.same_weights(backbone):
            return False
        size = (int(input_size[0]), int(input_size[1]))
        if size != self.model.input_size or int(max_cells) != self.max_cells:
            self.model.input_size, self.max_cells = size, int(max_cells)
            self.clear()
        return True

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> the same average-pooled by ``ceil(sqrt(h w / max_cells))``
        (ceil mode: a partial border window averages the cells it covers); unchanged when
        ``max_cells`` is 0 or the grid is small enough."""
        h, w = feats.shape[-2:]
        factor = math.ceil(math.sqrt(h * w / self.max_cells)) if self.max_cells else 1
        return F.avg_pool2d(feats, factor, ceil_mode=True) if factor > 1 else feats

    def _features(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PastaError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                             f"{image.dtype}")
        return self.pool(self.model.encode([self.model.prepare(image)]))

    def _check(self, prompt: AnomalyPrompt | NormalPrompt) -> None:
        arch, size = self.model.arch, self.model.input_size
        if prompt.backbone != arch.backbone or tuple(prompt.input_size) != size:
            raise PastaError(f"prompt was encoded with {prompt.backbone} at "
                             f"{prompt.input_size[0]}x{prompt.input_size[1]} but the model uses "
                             f"{arch.backbone} at {size[0]}x{size[1]}; "
                             "set the prompt again from its images")

    # -- prompts --------------------------------------------------------------------------
    def encode_anomaly_prompt(self, image: np.ndarray, mask: np.ndarray,
                              negative: np.ndarray | None = None) -> AnomalyPrompt:
        """One prompt image and its ``(H, W)`` anomaly mask -> AnomalyPrompt (not set).
        ``negative``: optional ``(H, W)`` area that is not the anomaly (negative clicks); it
        wins where it overlaps the mask."""
        for name, m in (("prompt mask", mask), ("negative mask", negative)):
            if m is not None and (m.shape[:2] != image.shape[:2] or m.ndim != 2):
                raise PastaError(f"{name} is {m.shape[1]}x{m.shape[0]} but its image is "
                                 f"{image.shape[1]}x{image.shape[0]}; they must be the same "
                                 "size")
        pos = np.asarray(mask) > 0
        neg = None if negative is None else np.asarray(negative) > 0
        if neg is not None:
            pos &= ~neg
        if not np.any(pos):
            raise PastaError("empty prompt mask: mark at least one pixel of the anomaly"
                             + (" outside the negative clicks" if neg is not None else ""))
        t = lambda m: torch.from_numpy(m.astype(np.float32))[None]  # noqa: E731
        return anomaly_prompt(self.model, self._features(image), t(pos),
                              None if neg is None else t(neg))

    def encode_normal_prompt(self, images: Sequence[np.ndarray]) -> NormalPrompt:
        """k normal images -> NormalPrompt (not set). Zero images raise PastaError."""
        if len(images) == 0:
            raise PastaError("normal prompting needs at least one normal image (zero shots)")
        return normal_prompt(self.model, [self._features(im) for im in images])

    def set_prompt(self, prompt: AnomalyPrompt | NormalPrompt) -> None:
        """Install an encoded prompt after checking it fits the model."""
        self._check(prompt)
        self._prepare_runtime(prompt)
        if isinstance(prompt, AnomalyPrompt):
            self.anomaly = prompt
        else:
            self.normal = prompt

    def set_anomaly_prompt(self, image: np.ndarray, mask: np.ndarray) -> None:
        self.set_prompt(self.encode_anomaly_prompt(image, mask))

    def set_normal_prompt(self, images: Sequence[np.ndarray]) -> None:
        self.set_prompt(self.encode_normal_prompt(images))

    def set_interactive_prompt(self, image: np.ndarray, points: Sequence = (),
                               boxes: Sequence = (), radius: float | None = None,
                               negative_points: Sequence = ()) -> None:
        """Clicks ``(x, y)`` and boxes ``(x0, y0, x1, y1)`` in image pixels -> anomaly prompt;
        ``negative_points`` ``(x, y)``: clicks on what is *not* the anomaly."""
        self.set_prompt(self.encode_anomaly_prompt(
            image, area_mask(image.shape[:2], points, boxes, radius),
            negative_mask(image.shape[:2], negative_points, radius)))

    def clear(self, which: str = "all") -> None:
        """Drop the 'anomaly', 'normal' or 'all' prompts."""
        if which not in ("anomaly", "normal", "all"):
            raise PastaError(f"clear: expected anomaly, normal or all, got {which!r}")
        if which in ("anomaly", "all"):
            self.anomaly = None
        if which in ("normal", "all"):
            self.normal = None

    # -- inference ------------------------------------------------------------------------
    def prompts(self) -> tuple[NormalPrompt | None, AnomalyPrompt | None]:
        """The prompts set now, read once (a concurrent set/clear never splits a frame)."""
        return self.normal, self.anomaly

    def score_grid(self, image: np.ndarray, mode: str = "auto",
                   feats: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
        """Score map at the encoder's feature resolution: ``(h, w) float32`` in [0, 1], and the
        mode used. mode: 'auto' (every prompt set), 'anomaly', 'normal' or 'both'.
        ``feats``: the image's ``(1, C, h, w) float32`` encoder features when the caller has
        them (another component's pass of the same backbone, :meth:`shares_features`); the
        encoder then does not run."""
        normal, anomaly = self.prompts()
        if mode == "auto":
            mode = {(True, True): "both", (True, False): "anomaly",
                    (False, True): "normal"}.get((anomaly is not None, normal is not None),
                                                 "none")
        need = {"anomaly": (anomaly,), "normal": (normal,), "both": (anomaly, normal)}
        if mode not in need or any(p is None for p in need[mode]):
            raise PastaError(f"no prompt for mode {mode!r}: set an anomaly prompt (image + "
                             "mask, or clicks) and/or a normal prompt (k normal images) first")
        for prompt in need[mode]:
            self._check(prompt)
        if feats is None:
            feats = self._features(image)
        elif feats.ndim != 4 or feats.shape[:2] != (1, self.model.arch.decoder.in_channels):
            raise PastaError(f"shared features must be (1, {self.model.arch.decoder.in_channels}"
                             f", h, w), got {tuple(feats.shape)}")
        else:
            feats = self.pool(feats.to(next(self.model.decoder.parameters()).device).float())
        maps = []
        if mode in ("anomaly", "both"):
            maps.append(score_anomaly(self.model, feats, anomaly, self.mfm,
                                      runtime=self.runtime))
        if mode in ("normal", "both"):
            maps.append(score_normal(self.model, feats, normal, self.mfm,
                                     runtime=self.runtime))
        return torch.stack(maps).mean(0)[0].clamp(0, 1), mode

    def predict(self, image: np.ndarray, mode: str = "auto") -> ICASResult:
        """Segment one image with the prompts set (see :meth:`score_grid` for ``mode``)."""
        score, mode = self.score_grid(image, mode)
        h, w = image.shape[:2]
        full = F.interpolate(score[None, None], size=(h, w), mode="bilinear",
                             align_corners=False)[0, 0]
        full = full.clamp(0, 1).cpu().numpy().astype(np.float32)
        return ICASResult(full, full >= self.threshold, float(score.max()), mode)
