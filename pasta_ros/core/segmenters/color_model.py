"""Pixel colour model learnt without labels: background vs object colour histograms.

During calibration, pixels of patches whose cluster is background (and whose 8-neighbours
are too) and every pixel of an empty scene feed a background colour histogram. Objects are
open-set (any colour that is not belt/soil), so their colour likelihood is uniform: the
per-pixel object log-odds is log(1/N_BINS) - log p(colour | background). Object-patch
pixels are not used for a histogram because receptive-field halos put belt pixels there.
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
    """Accumulates the background colour histogram, one image at a time (constant memory)."""

    def __init__(self) -> None:
        self.background = np.zeros(N_BINS, np.float64)

    def add(self, image: np.ndarray, is_object: np.ndarray | None) -> None:
        """Add one ``(H, W, 3) uint8`` image. ``is_object`` is the ``(h, w) bool`` patch map
        (object = non-background cluster), or None for an empty scene (all background)."""
        self.add_index(color_index(image), is_object)

    def add_index(self, idx: np.ndarray, is_object: np.ndarray | None) -> None:
        """:meth:`add` for an image already turned into ``(H, W)`` colour bins
        (:func:`color_index`), e.g. kept from calibration's feature pass."""
        if is_object is None:
            self.background += np.bincount(idx.ravel(), minlength=N_BINS)
            return
        _, bg = confident_patches(is_object)
        h, w = idx.shape[:2]
        self.background += np.bincount(idx[_nearest(bg, h, w)], minlength=N_BINS)

    def log_odds(self, alpha: float = 1.0, clip: float = 4.0) -> np.ndarray:
        """``(N_BINS,) float32`` log(p(colour|object) / p(colour|background)) with a uniform
        object likelihood, ``alpha`` pseudo-counts per background bin, clipped to ``+-clip``;
        all zeros when no background pixel was seen."""
        if self.background.sum() == 0:
            return np.zeros(N_BINS, np.float32)
        po = 1.0 / N_BINS
        pb = (self.background + alpha) / (self.background.sum() + alpha * N_BINS)
        return np.clip(np.log(po / pb), -clip, clip).astype(np.float32)


def _nearest(patch_map: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest upsampling of a ``(gh, gw)`` map to ``(h, w)`` by index arithmetic."""
    gh, gw = patch_map.shape
    rows = (np.arange(h) * gh) // h
    cols = (np.arange(w) * gw) // w
    return patch_map[rows[:, None], cols[None, :]]
