"""Backbone registry: names -> frozen patch-feature extractors, static info, weight fingerprints.

Names: ``efficientnet_lite0`` (bundled ImageNet weights; taps selectable with a suffix such as
``efficientnet_lite0:s16`` or ``efficientnet_lite0:s8+s16+s32``) and the paper's backbones
``dinov2_vits14``, ``dinov3_vits16``, ``dinov3_convnext_tiny``, ``clip_vit_b16``,
``clip_vit_b32_laion2b``, ``bioclip`` (weights from a local path only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pasta_ros.core.backbones.base import Backbone, BackboneError, BackboneInfo
from pasta_ros.core.backbones.efficientnet import (
    DEFAULT_LAYERS,
    LITE0_NAME,
    EfficientNetLite0Backbone,
    bundled_weights_path,
    check_layers,
    lite0_info,
)
from pasta_ros.core.backbones.hf import SPECS, WEIGHT_SUFFIXES, build_hf_backbone, hf_info

__all__ = ["BACKBONES", "Backbone", "BackboneEntry", "BackboneError", "BackboneInfo",
           "backbone_info", "build_backbone", "list_backbones", "weights_fingerprint"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one registry backbone and describe it without building it.

    build(taps, weights, tiny) -> Backbone; info(taps) -> BackboneInfo, where ``taps`` is the
    parsed ``:s8+s16`` suffix (None = the default) for entries with ``takes_taps``.
    bundled_weights: the weight file shipped with a package, or None (weights from a path).
    """

    build: Callable[[tuple[str, ...] | None, str, bool], Backbone]
    info: Callable[[tuple[str, ...] | None], BackboneInfo]
    bundled_weights: Callable[[], Path] | None = None
    takes_taps: bool = False


def _lite0_name(layers: tuple[str, ...]) -> str:
    """Canonical name: plain for the default taps, else ``efficientnet_lite0:s8+s16+s32``."""
    return LITE0_NAME if layers == DEFAULT_LAYERS else f"{LITE0_NAME}:{'+'.join(layers)}"


def _lite0_info(taps: tuple[str, ...] | None) -> BackboneInfo:
    layers = taps or DEFAULT_LAYERS
    return lite0_info(layers, name=_lite0_name(layers))


def _build_lite0(taps: tuple[str, ...] | None, weights: str, tiny: bool) -> Backbone:
    layers = taps or DEFAULT_LAYERS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return EfficientNetLite0Backbone(layers, weights, tiny=tiny, name=_lite0_name(layers))


def _hf_entry(name: str) -> BackboneEntry:
    return BackboneEntry(build=lambda _taps, weights, tiny: build_hf_backbone(name, weights,
                                                                              tiny=tiny),
                         info=lambda _taps: hf_info(name))


# The registry: the one place a backbone is added (a transformers model: one SPECS entry in
# hf.py). Config choices, CLI help and `pasta config` read list_backbones().
BACKBONES: dict[str, BackboneEntry] = {
    LITE0_NAME: BackboneEntry(_build_lite0, _lite0_info, bundled_weights_path, takes_taps=True),
    **{name: _hf_entry(name) for name in SPECS},
}


def list_backbones() -> list[str]:
    """The registry names (efficientnet_lite0 also accepts a ``:taps`` suffix)."""
    return list(BACKBONES)


def _parse(name: str) -> tuple[str, tuple[str, ...] | None]:
    """``'efficientnet_lite0:s8+s16'`` -> ``('efficientnet_lite0', ('s8', 's16'))``; validates."""
    base, sep, suffix = name.strip().partition(":")
    if base not in BACKBONES:
        raise BackboneError(f"unknown backbone '{name}'; valid names: "
                            f"{', '.join(list_backbones())} (efficientnet_lite0 also takes taps, "
                            "e.g. 'efficientnet_lite0:s8+s16+s32')")
    if not sep:
        return base, None
    if not BACKBONES[base].takes_taps:
        raise BackboneError(f"backbone '{name}': only {LITE0_NAME} takes a ':taps' suffix")
    return base, check_layers(tuple(t.strip() for t in suffix.split("+")))


def backbone_info(name: str) -> BackboneInfo:
    """Stride, channels and normalisation of a full-size backbone, without building it."""
    base, taps = _parse(name)
    return BACKBONES[base].info(taps)


def build_backbone(name: str, weights: str = "", *, tiny: bool = False) -> Backbone:
    """Build a frozen backbone (eval mode, ``requires_grad`` False).

    ``weights``: "" for efficientnet_lite0's bundled file, else a local state-dict file or (for
    the transformers backbones) a Hugging Face snapshot folder. ``tiny=True``: a small, randomly
    initialised (seed 0) model for tests; a given ``weights`` file then loads into that config.
    """
    base, taps = _parse(name)
    model = BACKBONES[base].build(taps, weights, tiny)
    model.eval()
    model.requires_grad_(False)
    return model


def _weight_files(name: str, weights: str) -> list[Path]:
    """The files whose bytes identify the weights of ``name`` loaded from ``weights``."""
    base, _ = _parse(name)
    if not weights:
        bundled = BACKBONES[base].bundled_weights
        if bundled is not None:
            return [bundled()]
        raise BackboneError(f"{base} needs --weights PATH: a Hugging Face snapshot folder "
                            "(config.json + *.safetensors) or a state-dict file; no weights "
                            "ship offline")
    path = Path(weights).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BackboneError(f"weights not found: {path}; expected a state-dict file or a "
                            "snapshot folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise BackboneError(f"{path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return files


def weights_fingerprint(name: str, weights: str) -> str:
    """First 16 hex chars of the sha256 over the weight file(s), streamed in sorted order."""
    digest = hashlib.sha256()
    for f in _weight_files(name, weights):
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
