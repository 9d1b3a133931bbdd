"""One graph from camera pixels to the patch cluster map, centres baked in.

``FusedClusterNet``: ``(B, H, W, 3) uint8`` RGB (or ``(B, 3, H, W) float32`` in [0, 1]) ->
normalisation -> backbone -> optional colour descriptor -> nearest calibrated centre ->
``(B, h, w) int64`` cluster ids. The math is FeatureExtractor.features + assign_clusters
step for step, so an exported graph agrees with the torch path patch for patch; on a GPU the
whole frame stays in one engine (no host round trip between backbone and assignment).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from pasta_ros.core.backbones.base import Backbone
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.features import FeatureExtractor, patch_colors
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.preprocess import network_size
from pasta_ros.export.onnx_export import (
    DEFAULT_OPSET,
    ExportError,
    ExportReport,
    Parity,
    export_onnx,
    ort_session,
)

log = logging.getLogger("pasta.export")

LAYOUTS = ("uint8_nhwc", "float_nchw")


class FusedClusterNet(nn.Module):
    """Pixels -> cluster map with ``centers (K, C) float32`` baked in as a buffer.

    layout ``uint8_nhwc``: input ``(B, H, W, 3) uint8`` RGB, as the camera delivers it;
    ``float_nchw``: ``(B, 3, H, W) float32`` RGB in [0, 1]. H, W multiples of the stride.
    Output ``(B, H // stride, W // stride) int64`` nearest-centre ids.
    """

    def __init__(self, backbone: Backbone, centers: torch.Tensor, color_weight: float = 0.0,
                 layout: str = "uint8_nhwc") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ExportError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        channels = backbone.info.channels + (3 if color_weight > 0 else 0)
        if centers.dim() != 2 or centers.shape[1] != channels:
            raise ExportError(f"centres of shape {tuple(centers.shape)} do not fit "
                              f"{backbone.info.name} (colour weight {color_weight}): expected "
                              f"(K, {channels})")
        self.backbone = backbone
        self.layout = layout
        self.color_weight = float(color_weight)
        self.register_buffer("centers", centers.float().clone())
        self.register_buffer("c_sq", centers.float().pow(2).sum(1).view(1, -1, 1))
        self.register_buffer("mean", torch.tensor(backbone.info.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.info.std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image batch -> ``(B, h, w) int64`` cluster ids (see class docstring)."""
        if self.layout == "uint8_nhwc":
            # Cast before the transpose: TensorRT accepts uint8 only straight into a Cast.
            rgb01 = image.float().permute(0, 3, 1, 2) / 255.0
        else:
            rgb01 = image.float()
        x = (rgb01 - self.mean) / self.std
        feats = self.backbone(x).float()
        b, c, h, w = (int(v) for v in feats.shape)  # fixed at export: pooling needs ints
        if self.color_weight > 0:
            rgb = x * self.std + self.mean  # as FeatureExtractor: colour from the normalised x
            feats = torch.cat([nn.functional.normalize(feats, dim=1),
                               self.color_weight * patch_colors(rgb, (h, w))], dim=1)
        flat = feats.reshape(b, feats.shape[1], h * w)
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scores = self.c_sq - 2.0 * torch.matmul(self.centers, flat)
        return scores.argmin(dim=1).reshape(b, h, w)


def fused_from_model(model: CalibratedModel, backbone: Backbone,
                     layout: str = "uint8_nhwc") -> FusedClusterNet:
    """The fused graph of a calibrated model (its centres and colour weight)."""
    if backbone.info.name != model.backbone:
        raise ExportError(f"the model was calibrated with {model.backbone} but the backbone is "
                          f"{backbone.info.name}")
    return FusedClusterNet(backbone, torch.from_numpy(model.centers), model.color_weight,
                           layout).eval()


def smooth_test_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A seeded ``(H, W, 3) uint8`` image of smooth colour blobs (realistic-ish statistics,
    unlike white noise) for parity checks."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    return cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)


def torch_cluster_map(net: FusedClusterNet, images: Sequence[np.ndarray]) -> torch.Tensor:
    """The reference: FeatureExtractor.features + assign_clusters on ``(H, W, 3) uint8``
    images at the network size -> ``(B, h, w) int64``."""
    h, w = images[0].shape[:2]
    ext = FeatureExtractor(net.backbone, (w, h), "cpu", net.color_weight)
    return assign_clusters(ext.features(list(images)), net.centers)


def fused_file_name(model_id: str, size: tuple[int, int]) -> str:
    return f"fused-{model_id}-{size[0]}x{size[1]}.onnx"


def export_fused(net: FusedClusterNet, out_path: str | Path, camera_size: tuple[int, int],
                 *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                 images: Sequence[np.ndarray] | None = None) -> ExportReport:
    """Export ``net`` at the network size for a ``camera_size = (W, H)`` camera (the aspect
    kept, sides rounded to the stride, as the pipeline resizes) and check that ONNX Runtime
    gives the torch path's cluster map. ``images``: ``(H, W, 3) uint8`` at the network size
    for the check (default: two seeded smooth images)."""
    stride = net.backbone.info.stride
    w, h = network_size(camera_size[0], camera_size[1], camera_size[0], camera_size[1], stride)
    images = list(images) if images is not None else [smooth_test_image(w, h, s) for s in (0, 1)]
    if any(im.shape[:2] != (h, w) for im in images):
        raise ExportError(f"check images must be {w}x{h} (the network size)")
    batch = np.stack(images)
    example = torch.from_numpy(batch[:1])
    if net.layout == "float_nchw":
        example = example.permute(0, 3, 1, 2).float() / 255.0
    export_onnx(net, (example,), out_path, input_names=["image"], output_names=["cluster_map"],
                opset=opset, dynamic_batch=dynamic_batch, static_pad=True)
    sess = ort_session(out_path)
    outs = []
    for im in batch:  # one at a time: the graph may have a fixed batch of 1
        feed = im[None] if net.layout == "uint8_nhwc" else \
            (im[None].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        outs.append(sess.run(None, {"image": feed})[0])
    got = torch.from_numpy(np.concatenate(outs))
    ref = torch_cluster_map(net, images)
    if got.shape != ref.shape:
        raise ExportError(f"fused graph returned {tuple(got.shape)}, torch {tuple(ref.shape)}")
    agreement = float((got == ref).float().mean())
    parity = Parity("cluster_map", None, None, agreement)
    log.info("exported fused graph -> %s; cluster-map agreement %.4f%%", out_path,
             100 * agreement)
    return ExportReport(str(out_path), (w, h), opset, (parity,))
