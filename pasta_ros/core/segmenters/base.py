"""The pluggable segmenter interface: class-agnostic, disjoint instance masks."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Segmenter(Protocol):
    """Produces disjoint class-agnostic instances for one image.

    ``segment(image, cluster_map)``: image is ``(H, W, 3) uint8`` RGB at the backbone input
    size; cluster_map is the ``(h, w) int64`` patch cluster map of that image (segmenters
    that do not use it ignore it). Returns ``(H, W) int32`` instance ids, 0 = no object,
    1..N = instances (disjoint by construction: one owner per pixel).
    """

    name: str

    def segment(self, image: np.ndarray, cluster_map: torch.Tensor) -> np.ndarray: ...
