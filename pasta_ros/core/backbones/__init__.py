"""Backbone registry: names -> frozen patch-feature extractors, static info, weight fingerprints.

Names: ``efficientnet_lite0`` (bundled ImageNet weights; taps selectable with a suffix such as
``efficientnet_lite0:s16`` or ``efficientnet_lite0:s8+s16+s32``) and the paper's backbones
``dinov2_vits14``, ``dinov3_vits16``, ``dinov3_convnext_tiny``, ``clip_vit_b16``,
``clip_vit_b32_laion2b``, ``bioclip`` (weights from a local path only).
"""

from __future__ import annotations

import hashlib
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

__all__ = ["Backbone", "BackboneError", "BackboneInfo", "backbone_info", "build_backbone",
           "list_backbones", "weights_fingerprint"]

_CHUNK = 1 << 20


def list_backbones() -> list[str]:
    """The registry names (efficientnet_lite0 also accepts a ``:taps`` suffix)."""
    return [LITE0_NAME, *SPECS]


def _parse(name: str) -> tuple[str, tuple[str, ...] | None]:
    """``'efficientnet_lite0:s8+s16'`` -> ``('efficientnet_lite0', ('s8', 's16'))``; validates."""
    base, sep, suffix = name.strip().partition(":")
    if base not in list_backbones():
        raise BackboneError(f"unknown backbone '{name}'; valid names: "
                            f"{', '.join(list_backbones())} (efficientnet_lite0 also takes taps, "
                            "e.g. 'efficientnet_lite0:s8+s16+s32')")
    if not sep:
        return base, None
    if base != LITE0_NAME:
        raise BackboneError(f"backbone '{name}': only {LITE0_NAME} takes a ':taps' suffix")
    return base, check_layers(tuple(t.strip() for t in suffix.split("+")))


def _lite0_name(layers: tuple[str, ...]) -> str:
    """Canonical name: plain for the default taps, else ``efficientnet_lite0:s8+s16+s32``."""
    return LITE0_NAME if layers == DEFAULT_LAYERS else f"{LITE0_NAME}:{'+'.join(layers)}"


def backbone_info(name: str) -> BackboneInfo:
    """Stride, channels and normalisation of a full-size backbone, without building it."""
    base, layers = _parse(name)
    if base == LITE0_NAME:
        layers = layers or DEFAULT_LAYERS
        return lite0_info(layers, name=_lite0_name(layers))
    return hf_info(base)


def build_backbone(name: str, weights: str = "", *, tiny: bool = False) -> Backbone:
    """Build a frozen backbone (eval mode, ``requires_grad`` False).

    ``weights``: "" for efficientnet_lite0's bundled file, else a local state-dict file or (for
    the transformers backbones) a Hugging Face snapshot folder. ``tiny=True``: a small, randomly
    initialised (seed 0) model for tests; a given ``weights`` file then loads into that config.
    """
    base, layers = _parse(name)
    if base == LITE0_NAME:
        layers = layers or DEFAULT_LAYERS
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model: Backbone = EfficientNetLite0Backbone(layers, weights, tiny=tiny,
                                                        name=_lite0_name(layers))
    else:
        model = build_hf_backbone(base, weights, tiny=tiny)
    model.eval()
    model.requires_grad_(False)
    return model


def _weight_files(name: str, weights: str) -> list[Path]:
    """The files whose bytes identify the weights of ``name`` loaded from ``weights``."""
    base, _ = _parse(name)
    if not weights:
        if base == LITE0_NAME:
            return [bundled_weights_path()]
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
