"""Texture and noise fields for the synthetic scenes.

Real photographic textures come from ``skimage.data`` (bundled, offline) and are randomly
rotated, scaled and cropped per use, so no two backgrounds or surfaces are identical.
All fields are ``float32`` and roughly zero-mean with unit standard deviation.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import skimage.data

TEXTURE_NAMES = ("gravel", "brick", "grass", "moon", "camera")


@cache
def texture(name: str) -> np.ndarray:
    """A ``(512, 512) float32`` skimage texture normalised to zero mean, unit std."""
    if name not in TEXTURE_NAMES:
        raise ValueError(f"unknown texture {name!r}; choose from {', '.join(TEXTURE_NAMES)}")
    img = getattr(skimage.data, name)().astype(np.float32)
    if name in ("moon", "camera"):
        # Remove the large-scale picture content: keep only surface detail.
        img = img - cv2.GaussianBlur(img, (0, 0), 12)
    img = (img - img.mean()) / (img.std() + 1e-6)
    img.setflags(write=False)
    return img


def texture_patch(
    rng: np.random.Generator, name: str, h: int, w: int, *, zoom: tuple[float, float] = (0.5, 1.5)
) -> np.ndarray:
    """A randomly rotated, scaled and shifted ``(h, w) float32`` view of a texture.

    ``zoom`` is the range of output pixels per texture pixel (< 1 makes the grain finer).
    Areas beyond the 512x512 source are mirrored.
    """
    src = texture(name)
    z = rng.uniform(*zoom)
    theta = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta) / z, np.sin(theta) / z
    cx, cy = rng.uniform(0, src.shape[1]), rng.uniform(0, src.shape[0])
    # Map output pixel (x, y) -> source (cx + R (x - w/2, y - h/2)) / zoom.
    m = np.array([[c, -s, cx - c * w / 2 + s * h / 2],
                  [s, c, cy - s * w / 2 - c * h / 2]], dtype=np.float64)
    return cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency ``(h, w) float32`` noise with features about ``cell`` pixels wide."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def streaks(rng: np.random.Generator, h: int, w: int, angle: float, length: float
            ) -> np.ndarray:
    """Directional ``(h, w) float32`` streak noise (brushed metal, belt wear) along ``angle``."""
    n = max(h, w)
    side = int(np.ceil(n * 1.5))
    lo = max(2, int(side / length))
    field = cv2.resize(rng.standard_normal((side, lo)).astype(np.float32), (side, side),
                       interpolation=cv2.INTER_LINEAR)
    field += 0.5 * rng.standard_normal((side, 1)).astype(np.float32)
    m = cv2.getRotationMatrix2D((side / 2, side / 2), np.degrees(angle), 1.0)
    m[:, 2] += (w / 2 - side / 2, h / 2 - side / 2)
    out = cv2.warpAffine(field, m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
    return (out - out.mean()) / (out.std() + 1e-6)


def illumination(rng: np.random.Generator, h: int, w: int, *, gradient: float,
                 vignette: float) -> np.ndarray:
    """Multiplicative ``(h, w) float32`` light field: a linear gradient times a vignette."""
    xn = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / (w / 2)
    yn = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / (h / 2)
    theta = rng.uniform(0, 2 * np.pi)
    g = 1.0 + gradient * (np.cos(theta) * xn + np.sin(theta) * yn) / 2
    return (g * (1.0 - vignette * (xn**2 + yn**2) / 2)).astype(np.float32)


def jitter_color(rng: np.random.Generator, rgb: tuple[float, float, float], *,
                 brightness: tuple[float, float], channel: float) -> np.ndarray:
    """``(3,) float32`` colour: ``rgb`` times a random brightness and per-channel jitter."""
    base = np.asarray(rgb, np.float32) * rng.uniform(*brightness)
    return base * (1.0 + rng.uniform(-channel, channel, 3).astype(np.float32))
