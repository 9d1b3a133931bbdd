"""Pixel colour model learnt without labels: background vs object colour histograms.

During calibration, pixels of patches whose cluster is background (and whose 4-neighbours
are too) feed the background histogram; pixels of confidently non-background patches feed
the object histogram; every pixel of an empty scene is background. At inference the
histograms give a per-pixel object log-odds that refines the coarse patch map to pixel
accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BITS = 4  # 16 levels per channel -> 4096 colour bins
N_BINS = 1 << (3 * BITS)


def color_index(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(H, W) int32`` quantised colour bin in [0, N_BINS)."""
    q = (image >> (8 - BITS)).astype(np.int32)
    return (q[..., 0] << (2 * BITS)) | (q[..., 1] << BITS) | q[..., 2]


def confident_patches(is_object: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h, w) bool`` object patches -> (object interior, background interior) ``(h, w) bool``:
    patches whose 3x3 neighbourhood all agree, to keep mixed boundary patches out."""
    struct = np.ones((3, 3), bool)
    obj = ndimage.binary_erosion(is_object, struct, border_value=1)
    bg = ndimage.binary_erosion(~is_object, struct, border_value=1)
    return obj, bg


class ColorModelBuilder:
    """Accumulates the two colour histograms, one image at a time (constant memory)."""

    def __init__(self) -> None:
        self.object = np.zeros(N_BINS, np.float64)
        self.background = np.zeros(N_BINS, np.float64)

    def add(self, image: np.ndarray, is_object: np.ndarray | None) -> None:
        """Add one ``(H, W, 3) uint8`` image. ``is_object`` is the ``(h, w) bool`` patch map
        (object = non-background cluster), or None for an empty scene (all background)."""
        idx = color_index(image)
        if is_object is None:
            self.background += np.bincount(idx.ravel(), minlength=N_BINS)
            return
        obj, bg = confident_patches(is_object)
        h, w = image.shape[:2]
        for patch_map, hist in ((obj, self.object), (bg, self.background)):
            up = _nearest(patch_map, h, w)
            hist += np.bincount(idx[up], minlength=N_BINS)

    def log_odds(self, alpha: float = 1.0, clip: float = 4.0) -> np.ndarray:
        """``(N_BINS,) float32`` log(p(colour|object) / p(colour|background)), smoothed with
        ``alpha`` pseudo-counts per bin and clipped to ``+-clip``; 0 where nothing was seen."""
        if self.object.sum() == 0 or self.background.sum() == 0:
            return np.zeros(N_BINS, np.float32)
        po = (self.object + alpha) / (self.object.sum() + alpha * N_BINS)
        pb = (self.background + alpha) / (self.background.sum() + alpha * N_BINS)
        return np.clip(np.log(po / pb), -clip, clip).astype(np.float32)


def _nearest(patch_map: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest upsampling of a ``(gh, gw)`` map to ``(h, w)`` by index arithmetic."""
    gh, gw = patch_map.shape
    rows = (np.arange(h) * gh) // h
    cols = (np.arange(w) * gw) // w
    return patch_map[rows[:, None], cols[None, :]]
