"""The pluggable segmenter interfaces: class-agnostic, disjoint instance masks, from the
whole image (:class:`Segmenter`) or from point prompts (:class:`PointSegmenter`)."""

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


class PointSegmenter(Protocol):
    """Grows one instance per point prompt (WaW's object masks; registry in :mod:`.points`).

    ``segment_points(image, region, points)``: image ``(H, W, 3) uint8`` RGB, region
    ``(H, W) bool`` (where objects may be, e.g. the ExG vegetation mask), points ``(P, 2)
    int64`` (x, y) pixels inside the region. Returns ``(H, W) int32`` disjoint ids inside the
    region, 0 = none; a point may give no instance, and duplicates are merged.
    """

    name: str

    def segment_points(self, image: np.ndarray, region: np.ndarray,
                       points: np.ndarray) -> np.ndarray: ...
