"""iCAS model = frozen registry encoder + in-context decoder; checkpoints that carry their
architecture and are validated on load."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.decoder import DecoderConfig, InContextDecoder
from pasta_ros.core.icas.gqs import select_queries
from pasta_ros.core.preprocess import network_size, resize_rgb, to_tensor_batch

CKPT_FORMAT = "pasta-icas-checkpoint-v1"


@dataclass(frozen=True)
class ICASArch:
    """Everything that fixes the shapes of a checkpoint: encoder name, its channel count and
    the decoder config. ``input_size``: max network input (W, H) the model was trained at."""

    backbone: str
    decoder: DecoderConfig
    input_size: tuple[int, int] = (224, 224)
    tiny_backbone: bool = False

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "decoder": self.decoder.to_dict(),
                "input_size": list(self.input_size), "tiny_backbone": self.tiny_backbone}

    @classmethod
    def from_dict(cls, d: dict) -> ICASArch:
        return cls(d["backbone"], DecoderConfig(**d["decoder"]), tuple(d["input_size"]),
                   bool(d.get("tiny_backbone", False)))


def describe_mismatch(a: ICASArch, b: ICASArch) -> str:
    """Human-readable list of the fields in which two architectures differ."""
    da, db = a.to_dict(), b.to_dict()
    diffs = [f"{k}: {da[k]} vs {db[k]}" for k in ("backbone", "input_size", "tiny_backbone")
             if da[k] != db[k]]
    diffs += [f"decoder.{k}: {v} vs {db['decoder'][k]}" for k, v in da["decoder"].items()
              if db["decoder"][k] != v]
    return "; ".join(diffs)


class ICASModel(nn.Module):
    """Frozen encoder (``build_backbone``) + trainable :class:`InContextDecoder`.

    ``input_size``: the max network input (W, H) images are encoded at; the architecture's
    (training) size unless set otherwise, e.g. to PASTA's input size so that the node's vote
    can run on PASTA's backbone features (:meth:`ICASPredictor.share_backbone`)."""

    def __init__(self, arch: ICASArch, weights: str = "") -> None:
        super().__init__()
        self.arch = arch
        self._input_size: tuple[int, int] | None = None  # None: the architecture's
        self.encoder = build_backbone(arch.backbone, weights, tiny=arch.tiny_backbone)
        if self.encoder.info.channels != arch.decoder.in_channels:
            raise PastaError(f"backbone {arch.backbone} gives {self.encoder.info.channels} "
                             f"channels but the decoder expects {arch.decoder.in_channels}")
        self.decoder = InContextDecoder(arch.decoder)

    @property
    def input_size(self) -> tuple[int, int]:
        """Max network input ``(W, H)`` images are encoded at (see the class doc)."""
        return self._input_size or tuple(self.arch.input_size)

    @input_size.setter
    def input_size(self, size: tuple[int, int]) -> None:
        self._input_size = (int(size[0]), int(size[1]))

    @property
    def stride(self) -> int:
        return self.encoder.info.stride

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> network size (aspect kept, sides stride multiples)."""
        h, w = image.shape[:2]
        size = network_size(w, h, *self.input_size, self.stride)
        return resize_rgb(image, size)

    @torch.no_grad()
    def encode(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size prepared ``uint8`` images -> ``(B, C, h, w)`` frozen encoder features."""
        info = self.encoder.info
        dev = next(self.decoder.parameters()).device
        return self.encoder(to_tensor_batch(prepared, info.mean, info.std, dev)).float()

    def queries(self, feats: torch.Tensor) -> torch.Tensor | None:
        """GQS cell indices ``(B, K)`` (None when the decoder uses learned queries)."""
        if not self.arch.decoder.gqs:
            return None
        return select_queries(feats, self.arch.decoder.queries)


def default_arch(backbone: str = "efficientnet_lite0", *, tiny: bool = False,
                 input_size: tuple[int, int] = (224, 224), **decoder: int) -> ICASArch:
    """Architecture for a registry backbone; ``decoder`` overrides DecoderConfig fields."""
    from pasta_ros.core.backbones import backbone_info
    channels = (build_backbone(backbone, tiny=True).info.channels if tiny
                else backbone_info(backbone).channels)
    return ICASArch(backbone, DecoderConfig(in_channels=channels, **decoder), input_size, tiny)


@dataclass
class Checkpoint:
    """A loaded checkpoint: arch, decoder weights and the training state to resume from."""

    arch: ICASArch
    decoder_state: dict
    stage: str = "generic"
    step: int = 0
    optimizer_state: dict | None = None
    meta: dict = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: ICASModel, *, stage: str, step: int,
                    optimizer: torch.optim.Optimizer | None = None, meta: dict | None = None
                    ) -> Path:
    """Write decoder weights + arch (+ optimizer and step for resuming) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": CKPT_FORMAT, "arch": model.arch.to_dict(), "stage": stage, "step": step,
             "decoder": {k: v.detach().cpu() for k, v in model.decoder.state_dict().items()},
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "meta": meta or {}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint file. Raises PastaError for a missing, corrupt or foreign
    file."""
    path = Path(path)
    if not path.is_file():
        raise PastaError(f"iCAS checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise PastaError(f"cannot read iCAS checkpoint {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != CKPT_FORMAT:
        raise PastaError(f"{path} is not an iCAS checkpoint (expected format {CKPT_FORMAT})")
    try:
        arch = ICASArch.from_dict(raw["arch"])
    except (KeyError, TypeError) as exc:
        raise PastaError(f"{path}: malformed architecture record ({exc})") from exc
    return Checkpoint(arch, raw["decoder"], raw.get("stage", "generic"), int(raw.get("step", 0)),
                      raw.get("optimizer"), raw.get("meta", {}))


def load_decoder(model: ICASModel, ckpt: Checkpoint, source: str = "checkpoint") -> None:
    """Copy checkpoint weights into ``model``; PastaError when the architectures differ (the
    model's weights are untouched then)."""
    if ckpt.arch.decoder != model.arch.decoder or ckpt.arch.backbone != model.arch.backbone:
        raise PastaError(f"{source} was trained for another architecture "
                         f"({describe_mismatch(ckpt.arch, model.arch)}); use a checkpoint "
                         "trained with this backbone and decoder config")
    model.decoder.load_state_dict(ckpt.decoder_state)


SHIPPED_CHECKPOINT = Path("models") / "icas" / "icas_lite0.pt"


def default_checkpoint() -> Path:
    """The shipped checkpoint: in this source tree, else in an installed package's share folder
    (``<prefix>/share/pasta_ros/models/icas``, prefixes from ``AMENT_PREFIX_PATH`` and
    ``sys.prefix``). When neither exists, the source-tree path (errors then name it)."""
    source_tree = Path(__file__).resolve().parents[3] / SHIPPED_CHECKPOINT
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [source_tree] + [Path(p) / "share" / "pasta_ros" / SHIPPED_CHECKPOINT
                                  for p in (*prefixes, sys.prefix)]
    return next((c for c in candidates if c.is_file()), source_tree)


def load_icas_model(path: str | Path, weights: str = "", device: str = "cpu") -> ICASModel:
    """Build the model a checkpoint describes and load its weights (eval mode)."""
    ckpt = read_checkpoint(path)
    model = ICASModel(ckpt.arch, weights)
    load_decoder(model, ckpt, str(path))
    return model.to(device).eval()
