"""The paper's backbones (DINOv2, DINOv3 ViT/ConvNeXt, CLIP, BioCLIP) via transformers, offline.

Weights come only from a local path: a Hugging Face snapshot folder (``config.json`` + weights),
an open_clip folder (``open_clip_config.json`` + weights), or a single state-dict file loaded into
a config built here. ``transformers`` is imported lazily so that listing backbones stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pasta_ros.core.backbones.base import Backbone, BackboneError, BackboneInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_TINY_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2}
# Checkpoint entries that are not model parameters (old persistent buffers, training masks).
_IGNORED_KEYS = ("embeddings.position_ids", "rope_embed.periods", "bias_mask", "visual.proj")


@dataclass(frozen=True)
class HFSpec:
    """How to build one registry backbone: transformers classes, configs and grid facts."""

    family: str  # "dinov2" | "dinov3_vit" | "dinov3_convnext" | "clip"
    config_cls: str
    model_cls: str
    full: dict[str, Any]
    tiny: dict[str, Any]
    stride: int
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    model_types: tuple[str, ...] = field(default=())


def _clip_spec(patch: int, act: str) -> HFSpec:
    full = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "patch_size": patch, "image_size": 224,
            "projection_dim": 512, "hidden_act": act}
    tiny = {**_TINY_VIT, "patch_size": patch, "image_size": 2 * patch, "hidden_act": act}
    return HFSpec("clip", "CLIPVisionConfig", "CLIPVisionModel", full, tiny, patch, 768,
                  CLIP_MEAN, CLIP_STD, ("clip", "clip_vision_model"))


SPECS: dict[str, HFSpec] = {
    "dinov2_vits14": HFSpec(
        "dinov2", "Dinov2Config", "Dinov2Model",
        {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "mlp_ratio": 4,
         "patch_size": 14, "image_size": 518},
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2,
         "patch_size": 14, "image_size": 28},
        14, 384, IMAGENET_MEAN, IMAGENET_STD, ("dinov2",)),
    "dinov3_vits16": HFSpec(
        "dinov3_vit", "DINOv3ViTConfig", "DINOv3ViTModel",
        {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12,
         "num_attention_heads": 6, "patch_size": 16, "num_register_tokens": 4,
         "rope_theta": 100.0, "image_size": 224},
        {**_TINY_VIT, "patch_size": 16, "num_register_tokens": 4, "image_size": 32},
        16, 384, IMAGENET_MEAN, IMAGENET_STD, ("dinov3_vit",)),
    "dinov3_convnext_tiny": HFSpec(
        "dinov3_convnext", "DINOv3ConvNextConfig", "DINOv3ConvNextModel",
        {"depths": [3, 3, 9, 3], "hidden_sizes": [96, 192, 384, 768]},
        {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 24, 32]},
        32, 768, IMAGENET_MEAN, IMAGENET_STD, ("dinov3_convnext",)),
    "clip_vit_b16": _clip_spec(16, "quick_gelu"),  # OpenAI CLIP uses QuickGELU
    "clip_vit_b32_laion2b": _clip_spec(32, "gelu"),  # open_clip ViT-B-32 (LAION) uses GELU
    # BioCLIP continued training from OpenAI ViT-B/16 (QuickGELU); an open_clip_config.json
    # next to the weights overrides this.
    "bioclip": _clip_spec(16, "quick_gelu"),
}


def hf_info(name: str, *, tiny: bool = False) -> BackboneInfo:
    """Static grid facts of a registry backbone (tiny: its test-size config); reads no weights."""
    spec = SPECS[name]
    cfg = spec.tiny if tiny else spec.full
    channels = cfg["hidden_sizes"][-1] if "hidden_sizes" in cfg else cfg["hidden_size"]
    return BackboneInfo(name=name, stride=spec.stride, channels=channels, mean=spec.mean,
                        std=spec.std)


class HFBackbone(Backbone):
    """Last-layer patch tokens of a transformers vision model as a feature grid.

    ``forward(x)``: x ``(B, 3, H, W) float32`` normalised with ``info.mean/std``, H and W multiples
    of ``info.stride``. Returns ``(B, C, H // stride, W // stride) float32``: ``last_hidden_state``
    (after the final LayerNorm for DINOv2/DINOv3; CLIP applies its post-LayerNorm to the pooled
    CLS token only, so CLIP patch tokens are the raw last encoder layer) without the prefix tokens.
    """

    def __init__(self, model: nn.Module, info: BackboneInfo, family: str,
                 num_prefix: int) -> None:
        super().__init__()
        self.model = model
        self.info = info
        self.family = family
        self.num_prefix = num_prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 -> (B, C, H // stride, W // stride) float32."""
        b, _, height, width = x.shape
        h, w = height // self.info.stride, width // self.info.stride
        # CLIP keeps a fixed 224-px position table unless asked to interpolate it; DINOv2
        # interpolates by itself and DINOv3 uses RoPE computed for the input grid.
        kwargs = {"interpolate_pos_encoding": True} if self.family == "clip" else {}
        tokens = self.model(pixel_values=x, **kwargs).last_hidden_state
        grid = tokens[:, self.num_prefix:, :]
        if grid.shape[1] != h * w:
            raise BackboneError(f"{self.info.name}: got {grid.shape[1]} patch tokens for a "
                                f"{height}x{width} input, expected {h}x{w}; sides must be "
                                f"multiples of {self.info.stride}")
        return grid.transpose(1, 2).reshape(b, self.info.channels, h, w).float()


def _num_prefix(model: nn.Module, family: str) -> int:
    """Tokens before the patch tokens: CLS (+ registers for DINOv3; pooled token for ConvNeXt)."""
    if family == "dinov3_vit":
        return 1 + int(model.config.num_register_tokens)
    return 1


def _grid_facts(model: nn.Module, family: str) -> tuple[int, int]:
    """(stride, channels) of a built model, read from its config."""
    cfg = model.config
    if family == "dinov3_convnext":
        return 4 * 2 ** (len(cfg.depths) - 1), int(cfg.hidden_sizes[-1])
    patch = cfg.patch_size
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch), int(cfg.hidden_size)


def _new_model(spec: HFSpec, *, tiny: bool, overrides: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialised model from the full or tiny config, seeded so builds repeat."""
    import transformers

    config = getattr(transformers, spec.config_cls)(
        **{**(spec.tiny if tiny else spec.full), **(overrides or {})})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return getattr(transformers, spec.model_cls)(config)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars; our own checks raise instead."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _from_snapshot(name: str, spec: HFSpec, folder: Path) -> nn.Module:
    """``Model.from_pretrained(folder)`` offline, float32; missing or mis-sized keys raise."""
    import transformers

    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise BackboneError(f"{folder}/config.json is not readable JSON: {exc}") from exc
    if model_type not in spec.model_types:
        raise BackboneError(f"{folder} holds a '{model_type}' model; {name} expects model_type "
                            f"{' or '.join(spec.model_types)}")
    if not any(p.suffix in (".safetensors", ".bin") for p in folder.iterdir()):
        raise BackboneError(f"{folder} has config.json but no *.safetensors / *.bin weights")
    cls = getattr(transformers, spec.model_cls)
    try:
        with _quiet_transformers():
            model, info = cls.from_pretrained(str(folder), local_files_only=True,
                                              output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackboneError(f"cannot load {name} from snapshot {folder}: {exc}") from exc
    bad = sorted(info.get("missing_keys", ())) + [str(k) for k in info.get("mismatched_keys", ())]
    if bad:
        raise BackboneError(f"snapshot {folder} does not fit {spec.model_cls}: missing or "
                            f"mis-sized keys {bad[:5]} ({len(bad)} in all)")
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch (.pth/.pt/.bin) file on CPU, unwrapped from a
    training checkpoint (``state_dict`` / ``model`` / ``teacher`` / ``module`` entries)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        raise BackboneError(f"cannot read weights {path} as a state dict ({exc}); expected a "
                            ".safetensors or a torch.save'd .pth/.bin (TorchScript archives "
                            "are not supported)") from exc
    while isinstance(state, dict) and not all(torch.is_tensor(v) for v in state.values()):
        inner = next((state[k] for k in ("state_dict", "model", "teacher", "module")
                      if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        raise BackboneError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _marker_prefix(state: dict[str, torch.Tensor], marker: str) -> str | None:
    """Prefix of the first key ending in ``marker`` (None if no key does)."""
    return next((k[: -len(marker)] for k in state if k.endswith(marker)), None)


def _split_qkv(out: dict[str, torch.Tensor], base: str, kind: str, t: torch.Tensor,
               names: tuple[str, str, str], *, skip_k_bias: bool = False) -> None:
    for proj, part in zip(names, t.chunk(3, dim=0)):
        if not (skip_k_bias and kind == "bias" and proj.startswith("k")):
            out[f"{base}.{proj}.{kind}"] = part.contiguous()


def _from_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """open_clip visual tower keys (``visual.transformer.resblocks...``) -> CLIPVisionModel."""
    top = {"class_embedding": "embeddings.class_embedding",
           "conv1.weight": "embeddings.patch_embedding.weight",
           "positional_embedding": "embeddings.position_embedding.weight",
           "ln_pre.weight": "pre_layrnorm.weight", "ln_pre.bias": "pre_layrnorm.bias",
           "ln_post.weight": "post_layernorm.weight", "ln_post.bias": "post_layernorm.bias"}
    sub = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
           "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    out: dict[str, torch.Tensor] = {}
    for key, t in _strip(state, prefix).items():
        m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key)
        if key == "proj":
            continue  # image-text projection: not part of the patch features
        if not m:
            out[top.get(key, key)] = t
            continue
        base, rest = f"encoder.layers.{m[1]}", m[2]
        if rest.startswith("attn.in_proj_"):
            _split_qkv(out, f"{base}.self_attn", rest.rsplit("_", 1)[1], t,
                       ("q_proj", "k_proj", "v_proj"))
            continue
        head = next((s for s in sub if rest.startswith(s + ".")), None)
        out[f"{base}.{sub[head]}{rest[len(head):]}" if head else f"{base}.{rest}"] = t
    return out


def _from_original_vit(state: dict[str, torch.Tensor], prefix: str,
                       family: str) -> dict[str, torch.Tensor]:
    """facebookresearch dinov2/dinov3 keys (``blocks.N.attn.qkv``) -> Dinov2Model/DINOv3ViTModel
    keys; the DINOv3 key bias (masked to zero in the original) is dropped, as HF has none."""
    v2 = family == "dinov2"
    layer = "encoder.layer" if v2 else "model.layer"
    patch = "embeddings.patch_embeddings" + (".projection" if v2 else "")
    top = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
           "pos_embed": "embeddings.position_embeddings",
           "storage_tokens": "embeddings.register_tokens",
           "patch_embed.proj.weight": f"{patch}.weight", "patch_embed.proj.bias": f"{patch}.bias",
           "norm.weight": ("layernorm" if v2 else "norm") + ".weight",
           "norm.bias": ("layernorm" if v2 else "norm") + ".bias"}
    sub = {"attn.proj": "attention.o_proj", "ls1.gamma": "layer_scale1.lambda1",
           "ls2.gamma": "layer_scale2.lambda1", "mlp.fc1": "mlp.fc1" if v2 else "mlp.up_proj",
           "mlp.fc2": "mlp.fc2" if v2 else "mlp.down_proj"}
    out: dict[str, torch.Tensor] = {}
    for key, t in _strip(state, prefix).items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if not m:
            out[top.get(key, key)] = t
            continue
        base, rest = f"{layer}.{m[1]}", m[2]
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            _split_qkv(out, f"{base}.attention", rest.rsplit(".", 1)[1], t,
                       ("q_proj", "k_proj", "v_proj"), skip_k_bias=not v2)
            continue
        head = next((s for s in sub if rest.startswith(s)), None)
        out[f"{base}.{sub[head]}{rest[len(head):]}" if head else f"{base}.{rest}"] = t
    return out


def _legacy_renames(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Key names of older transformers releases -> the installed ones."""
    rules = {
        "dinov2": [(r"attention\.attention\.(query|key|value)",
                    lambda m: f"attention.{m[1][0]}_proj"),
                   (r"attention\.output\.dense", lambda m: "attention.o_proj")],
        "dinov3_vit": [(r"^layer\.", lambda m: "model.layer.")],
        "dinov3_convnext": [(r"^stages\.", lambda m: "model.stages.")],
    }.get(family, [])
    for pattern, repl in rules:
        state = {re.sub(pattern, repl, k): v for k, v in state.items()}
    return state


def _to_model_keys(state: dict[str, torch.Tensor], family: str,
                   model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys to the model's: open_clip / original formats are converted;
    otherwise the prefix (``vision_model.``, ``model.``, ``module.``...) that matches most model
    keys is cut and older transformers key names are renamed."""
    if family == "clip" and (p := _marker_prefix(state, "conv1.weight")) is not None:
        return _from_open_clip(state, p)
    if family in ("dinov2", "dinov3_vit") and (
            p := _marker_prefix(state, "blocks.0.attn.qkv.weight")) is not None:
        return _from_original_vit(state, p, family)
    prefixes = ("", "module.", "model.", "backbone.", "vision_model.", "dinov2.", "encoder.")
    candidates = [_legacy_renames(_strip(state, p), family) for p in prefixes]
    return max(candidates, key=lambda c: len(c.keys() & model_keys))


def _load_file(model: nn.Module, spec: HFSpec, path: Path, label: str) -> None:
    """Load a state-dict file into ``model`` strictly; any key or shape problem raises."""
    expected = model.state_dict()
    state = _to_model_keys(read_state_dict(path), spec.family, set(expected))
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_KEYS)}
    for k, v in state.items():  # e.g. mask_token saved as (1, C) where the model has (1, 1, C)
        if k in expected and v.shape != expected[k].shape and v.squeeze().shape == \
                expected[k].squeeze().shape:
            state[k] = v.reshape(expected[k].shape)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise BackboneError(
            f"{path} does not fit {label}: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}, {len(mismatched)} size "
            f"mismatches {mismatched[:3]}. Expected a {spec.model_cls} state dict (HF key names, "
            "prefixes like vision_model./model./module. are cut; open_clip and original "
            "dinov2/dinov3 ViT keys are converted) or a Hugging Face snapshot folder")
    model.load_state_dict(state, strict=True)


def _open_clip_folder(name: str, spec: HFSpec, folder: Path, tiny: bool) -> nn.Module:
    """An open_clip folder (e.g. imageomics/bioclip): ``open_clip_config.json`` + weight file."""
    files = sorted((p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES),
                   key=lambda p: (p.suffix != ".safetensors", p.name))  # prefer safetensors
    if spec.family != "clip" or not files:
        raise BackboneError(f"{folder} has open_clip_config.json but {name} is not a CLIP "
                            "backbone or no weight file is there")
    cfg = json.loads((folder / "open_clip_config.json").read_text()).get("model_cfg", {})
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    model = _new_model(spec, tiny=tiny, overrides={"hidden_act": act})
    _load_file(model, spec, files[0], f"{name} ({'tiny' if tiny else 'full-size'})")
    return model


def _load_model(name: str, spec: HFSpec, weights: str, tiny: bool) -> nn.Module:
    """Resolve ``weights`` (folder or file) to a loaded model; errors name what was expected."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise BackboneError(f"{name} weights not found: {path}; expected a Hugging Face snapshot "
                            "folder (config.json + *.safetensors) or a state-dict file")
    if path.is_dir():
        if (path / "config.json").is_file():
            return _from_snapshot(name, spec, path)
        if (path / "open_clip_config.json").is_file():
            return _open_clip_folder(name, spec, path, tiny)
        raise BackboneError(f"{path} is a folder without config.json; {name} expects a Hugging "
                            "Face snapshot folder (config.json + model.safetensors or "
                            "pytorch_model.bin) or a state-dict file")
    model = _new_model(spec, tiny=tiny)
    _load_file(model, spec, path, f"{name} ({'tiny' if tiny else 'full-size'} config)")
    return model


def build_hf_backbone(name: str, weights: str = "", *, tiny: bool = False) -> HFBackbone:
    """Build registry backbone ``name`` (a key of ``SPECS``) in eval mode.

    ``weights``: snapshot folder or state-dict file; "" is allowed only with ``tiny=True``
    (random, seeded). With ``tiny=True`` a state-dict file loads into the tiny config.
    """
    spec = SPECS[name]
    if not weights and not tiny:
        raise BackboneError(f"{name} needs --weights PATH: a Hugging Face snapshot folder "
                            "(config.json + *.safetensors) or a state-dict file; no weights "
                            "ship offline")
    model = _load_model(name, spec, weights, tiny) if weights else _new_model(spec, tiny=True)
    model = model.float().eval()
    stride, channels = _grid_facts(model, spec.family)
    want = hf_info(name, tiny=tiny)
    if (stride, channels) != (want.stride, want.channels):
        raise BackboneError(f"{weights} is a model with stride {stride} and {channels} channels; "
                            f"{name} expects stride {want.stride} and {want.channels} channels")
    return HFBackbone(model, want, spec.family, _num_prefix(model, spec.family))
