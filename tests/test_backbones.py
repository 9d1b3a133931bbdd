"""Backbone registry tests: shapes, determinism, real EfficientNet weights, weight loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from pasta_ros.core.backbones import (
    BackboneError,
    backbone_info,
    build_backbone,
    list_backbones,
    weights_fingerprint,
)
from pasta_ros.core.backbones.efficientnet import classifier

HF_NAMES = [n for n in list_backbones() if n != "efficientnet_lite0"]


def _input(stride: int, batch: int = 2) -> torch.Tensor:
    """A seeded non-square batch: about 64x96 px, sides rounded to multiples of ``stride``."""
    h, w = max(2, round(64 / stride)) * stride, max(3, round(96 / stride)) * stride
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0))


def _run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_registry_lists_all_paper_backbones() -> None:
    assert set(list_backbones()) == {"efficientnet_lite0", "dinov2_vits14", "dinov3_vits16",
                                     "dinov3_convnext_tiny", "clip_vit_b16",
                                     "clip_vit_b32_laion2b", "bioclip"}


@pytest.mark.parametrize("name", list_backbones())
def test_tiny_shape_finite_deterministic_frozen(name: str) -> None:
    a, b = build_backbone(name, tiny=True), build_backbone(name, tiny=True)
    s = a.info.stride
    x = _input(s)
    ya, yb = _run(a, x), _run(b, x)
    assert ya.shape == (2, a.info.channels, x.shape[2] // s, x.shape[3] // s)
    assert ya.dtype == torch.float32 and torch.isfinite(ya).all()
    assert torch.equal(ya, yb)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    full = backbone_info(name)
    assert (full.stride, full.mean, full.std) == (s, a.info.mean, a.info.std)


@pytest.mark.parametrize(("name", "stride", "channels"), [
    ("dinov2_vits14", 14, 384), ("dinov3_vits16", 16, 384), ("dinov3_convnext_tiny", 32, 768),
    ("clip_vit_b16", 16, 768), ("clip_vit_b32_laion2b", 32, 768), ("bioclip", 16, 768),
    ("efficientnet_lite0", 8, 152), ("efficientnet_lite0:s16", 16, 112),
    ("efficientnet_lite0:s32", 32, 320), ("efficientnet_lite0:s8+s16+s32", 8, 472),
])
def test_backbone_info_full_size(name: str, stride: int, channels: int) -> None:
    info = backbone_info(name)
    assert (info.stride, info.channels) == (stride, channels)


def test_unknown_name_and_bad_suffix() -> None:
    with pytest.raises(BackboneError, match="valid names: efficientnet_lite0"):
        build_backbone("resnet50", tiny=True)
    with pytest.raises(BackboneError, match="s8"):
        backbone_info("efficientnet_lite0:s4")
    with pytest.raises(BackboneError, match="only efficientnet_lite0"):
        backbone_info("dinov2_vits14:s8")


# --- EfficientNet-Lite0 with the real bundled weights --------------------------------------


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return build_backbone("efficientnet_lite0:s8+s16+s32")


def test_chelsea_is_a_cat() -> None:
    """Proves the bundled weights and the Lite normalisation: an Egyptian/tabby/tiger cat."""
    from skimage.data import chelsea

    info = backbone_info("efficientnet_lite0")
    img = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255.0
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    x = (img - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]
    probs = _run(classifier(), x).softmax(-1)[0]
    assert int(probs.argmax()) in {281, 282, 285}
    assert float(probs.max()) > 0.5


def test_lite0_taps_and_suffix(lite0: torch.nn.Module) -> None:
    x = _input(32, batch=1)
    y = _run(lite0, x)
    h, w = x.shape[2] // 8, x.shape[3] // 8
    assert y.shape == (1, 472, h, w)
    # each tap is L2-normalised per cell: squared norms of the three slices are 1
    for lo, hi in [(0, 40), (40, 152), (152, 472)]:
        torch.testing.assert_close(y[:, lo:hi].norm(dim=1), torch.ones(1, h, w))
    s16 = build_backbone("efficientnet_lite0:s16")
    assert s16.info.name == "efficientnet_lite0:s16"
    assert _run(s16, x).shape == (1, 112, x.shape[2] // 16, x.shape[3] // 16)
    # the s8 tap does not depend on which coarser taps are selected
    s8s16 = build_backbone("efficientnet_lite0")
    assert s8s16.info.name == "efficientnet_lite0"
    torch.testing.assert_close(_run(s8s16, x)[:, :40], y[:, :40])


def test_lite0_padding_is_dynamic() -> None:
    """A 448-px input must give a 56-cell grid (static 224-px padding would not)."""
    y = _run(build_backbone("efficientnet_lite0:s8"), torch.zeros(1, 3, 448, 160))
    assert y.shape == (1, 40, 56, 20)


def test_lite0_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="not found.*nope.pth"):
        build_backbone("efficientnet_lite0", weights=str(tmp_path / "nope.pth"))


def test_lite0_state_dict_round_trip(tmp_path: Path, lite0: torch.nn.Module) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict(classifier().state_dict())
    torch.save(net.state_dict(), tmp_path / "lite0.pth")
    again = build_backbone("efficientnet_lite0:s8+s16+s32", weights=str(tmp_path / "lite0.pth"))
    x = _input(32, batch=1)
    torch.testing.assert_close(_run(again, x), _run(lite0, x))


# --- loading weights for the transformers backbones -----------------------------------------


def test_hf_backbones_need_weights() -> None:
    for name in HF_NAMES:
        with pytest.raises(BackboneError, match=f"{name} needs --weights PATH"):
            build_backbone(name)


def test_missing_path_and_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="not found.*missing_dir"):
        build_backbone("dinov2_vits14", weights=str(tmp_path / "missing_dir"))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BackboneError, match="without config.json"):
        build_backbone("dinov3_vits16", weights=str(tmp_path))


def test_wrong_architecture_state_dict(tmp_path: Path) -> None:
    tiny = build_backbone("dinov2_vits14", tiny=True)
    save_file(tiny.model.state_dict(), str(tmp_path / "tiny.safetensors"))
    with pytest.raises(BackboneError, match="size mismatch|missing|unexpected"):
        build_backbone("dinov2_vits14", weights=str(tmp_path / "tiny.safetensors"))
    with pytest.raises(BackboneError, match="does not fit clip_vit_b16"):
        build_backbone("clip_vit_b16", weights=str(tmp_path / "tiny.safetensors"), tiny=True)


@pytest.mark.parametrize("name", HF_NAMES)
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_state_dict_round_trip(tmp_path: Path, name: str, fmt: str) -> None:
    tiny = build_backbone(name, tiny=True)
    with torch.no_grad():  # move off the seeded init so a silent re-init would be caught
        for p in tiny.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"w.{fmt}"
    state = {f"vision_model.{k}": v for k, v in tiny.model.state_dict().items()}
    save_file(state, str(path)) if fmt == "safetensors" else torch.save({"model": state}, path)
    loaded = build_backbone(name, weights=str(path), tiny=True)
    x = _input(tiny.info.stride)
    torch.testing.assert_close(_run(loaded, x), _run(tiny, x))


def test_legacy_dinov2_key_names(tmp_path: Path) -> None:
    """Older transformers releases saved ``attention.attention.query`` / ``output.dense``."""
    tiny = build_backbone("dinov2_vits14", tiny=True)
    old = {"q_proj": "attention.query", "k_proj": "attention.key", "v_proj": "attention.value",
           "o_proj": "output.dense"}
    state = {}
    for k, v in tiny.model.state_dict().items():
        for a, b in old.items():
            k = k.replace(f"attention.{a}", f"attention.{b}")
        state[f"dinov2.{k}"] = v
    save_file(state, str(tmp_path / "old.safetensors"))
    loaded = build_backbone("dinov2_vits14", weights=str(tmp_path / "old.safetensors"), tiny=True)
    x = _input(14)
    torch.testing.assert_close(_run(loaded, x), _run(tiny, x))


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov3_vits16", "clip_vit_b16"])
def test_snapshot_folder_round_trip(tmp_path: Path, name: str) -> None:
    tiny = build_backbone(name, tiny=True)
    tiny.model.save_pretrained(tmp_path)
    loaded = build_backbone(name, weights=str(tmp_path), tiny=True)
    x = _input(tiny.info.stride)
    torch.testing.assert_close(_run(loaded, x), _run(tiny, x))
    with pytest.raises(BackboneError, match="expects model_type"):
        build_backbone("dinov3_convnext_tiny", weights=str(tmp_path), tiny=True)


def test_clip_snapshot_of_full_clipmodel_loads_vision_tower(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    tiny = build_backbone("clip_vit_b32_laion2b", tiny=True)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    full = CLIPModel(CLIPConfig(vision_config=tiny.model.config.to_dict(), text_config=text,
                                projection_dim=16))
    full.vision_model.load_state_dict(tiny.model.state_dict())
    full.save_pretrained(tmp_path)
    loaded = build_backbone("clip_vit_b32_laion2b", weights=str(tmp_path), tiny=True)
    x = _input(32)
    torch.testing.assert_close(_run(loaded, x), _run(tiny, x))


def _to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tiny CLIPVisionModel keys -> open_clip ``visual.*`` keys (inverse of the loader's map)."""
    top = {"embeddings.class_embedding": "class_embedding",
           "embeddings.patch_embedding.weight": "conv1.weight",
           "embeddings.position_embedding.weight": "positional_embedding",
           "pre_layrnorm": "ln_pre", "post_layernorm": "ln_post"}
    sub = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
           "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    out = {"visual.proj": torch.zeros(32, 8), "text_projection": torch.zeros(8, 8)}
    for k, v in sd.items():
        for a, b in {**top, **sub}.items():
            k = k.replace(a, b)
        out["visual." + k.replace("encoder.layers.", "transformer.resblocks.")] = v
    for i in range(2):
        p = f"visual.transformer.resblocks.{i}.self_attn."
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{p}{q}_proj.{kind}") for q in "qkv"]
            out[f"visual.transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(parts)
    return out


def test_open_clip_folder_converts(tmp_path: Path) -> None:
    tiny = build_backbone("bioclip", tiny=True)
    weights = tmp_path / "open_clip_model.safetensors"
    save_file(_to_open_clip(tiny.model.state_dict()), str(weights))
    config = {"model_cfg": {"quick_gelu": True}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    loaded = build_backbone("bioclip", weights=str(tmp_path), tiny=True)
    x = _input(16)
    torch.testing.assert_close(_run(loaded, x), _run(tiny, x))


def _to_original_vit(sd: dict[str, torch.Tensor], v3: bool) -> dict[str, torch.Tensor]:
    """Tiny Dinov2Model / DINOv3ViTModel keys -> facebookresearch keys (``blocks.N.attn.qkv``)."""
    ren = [("embeddings.patch_embeddings.projection", "patch_embed.proj"),
           ("embeddings.patch_embeddings", "patch_embed.proj"),
           ("embeddings.position_embeddings", "pos_embed"),
           ("embeddings.register_tokens", "storage_tokens"), ("embeddings.", ""),
           ("encoder.layer.", "blocks."), ("model.layer.", "blocks."),
           ("attention.o_proj", "attn.proj"), ("layer_scale1.lambda1", "ls1.gamma"),
           ("layer_scale2.lambda1", "ls2.gamma"), ("mlp.up_proj", "mlp.fc1"),
           ("mlp.down_proj", "mlp.fc2"), ("layernorm", "norm")]
    out = {}
    for k, v in sd.items():
        for a, b in ren:
            k = k.replace(a, b)
        out[k] = v.squeeze(0) if k == "mask_token" and v3 else v  # dinov3 stores (1, C)
    for i in range(2):
        q = f"blocks.{i}.attention."
        if v3:  # the original keeps a (masked, zero) key bias that HF drops
            out[f"{q}k_proj.bias"] = torch.zeros_like(out[f"{q}q_proj.bias"])
            out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.ones(3 * out[f"{q}q_proj.bias"].numel())
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{q}{p}_proj.{kind}") for p in "qkv"]
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts)
    return out


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov3_vits16"])
def test_original_vit_checkpoint_converts(tmp_path: Path, name: str) -> None:
    tiny = build_backbone(name, tiny=True)
    original = _to_original_vit(tiny.model.state_dict(), v3=name == "dinov3_vits16")
    path = tmp_path / f"{name}_pretrain.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in original.items()}}, path)
    loaded = build_backbone(name, weights=str(path), tiny=True)
    x = _input(tiny.info.stride)
    torch.testing.assert_close(_run(loaded, x), _run(tiny, x))


def test_weights_fingerprint(tmp_path: Path) -> None:
    bundled = weights_fingerprint("efficientnet_lite0", "")
    assert len(bundled) == 16 and bundled == weights_fingerprint("efficientnet_lite0:s16", "")
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"abc")
    first = weights_fingerprint("dinov2_vits14", str(f))
    assert first == weights_fingerprint("dinov2_vits14", str(f))
    f.write_bytes(b"abd")
    assert weights_fingerprint("dinov2_vits14", str(f)) != first
    (tmp_path / "config.json").write_text("{}")  # not a weight file: ignored in a folder
    folder = weights_fingerprint("dinov2_vits14", str(tmp_path))
    (tmp_path / "config.json").write_text('{"x": 1}')
    assert weights_fingerprint("dinov2_vits14", str(tmp_path)) == folder
    with pytest.raises(BackboneError, match="needs --weights"):
        weights_fingerprint("bioclip", "")
