"""The *steel* preset: scrap on a conveyor belt; steel = target, copper/brass = anomaly.

Backgrounds are a dark rubber belt (real ``gravel``/``moon`` texture, running streaks, a splice
seam, light falloff) with dust and small debris as clutter. Objects share one set of shapes;
colour (grey vs reddish-orange/yellow metal) is what tells them apart, while brightness,
shading and highlights vary within both classes.
"""

from __future__ import annotations

import cv2
import numpy as np

from pasta_ros.data.synth_shapes import blend, shape_coverage
from pasta_ros.data.synth_textures import (
    illumination,
    jitter_color,
    smooth_noise,
    streaks,
    texture_patch,
)

BELT_RGB = (50.0, 56.0, 66.0)
STEEL_TINTS = ((1.0, 1.0, 1.0), (0.94, 0.99, 1.07), (1.04, 1.01, 0.95))
COPPER_RGB = (196.0, 104.0, 62.0)
BRASS_RGB = (204.0, 168.0, 84.0)
SHAPES = ("polygon", "rounded_rect", "rod", "ellipse", "l_shape", "ring", "blob", "scrap")


def belt_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An empty conveyor belt with clutter: ``(h, w, 3) float32`` RGB in [0, 255]."""
    color = jitter_color(rng, BELT_RGB, brightness=(0.75, 1.3), channel=0.06)
    tex = 0.75 * texture_patch(rng, "gravel", h, w, zoom=(0.3, 0.5))
    tex += 0.25 * texture_patch(rng, "moon", h, w, zoom=(0.8, 1.6))
    tex = cv2.GaussianBlur(tex, (0, 0), 0.8)
    run = streaks(rng, h, w, angle=rng.normal(0, 0.01), length=w / 3)
    lum = 1.0 + 0.08 * tex + 0.05 * run + 0.05 * smooth_noise(rng, h, w, cell=h / 3)
    lum *= illumination(rng, h, w, gradient=rng.uniform(0.1, 0.35),
                        vignette=rng.uniform(0.15, 0.4))
    img = lum[:, :, None] * color
    if rng.random() < 0.6:
        _seam(rng, img)
    _dust(rng, img)
    _debris(rng, img, color * 0.35)
    return img


def _seam(rng: np.random.Generator, img: np.ndarray) -> None:
    """A belt splice: a darker band across the belt with a thin bright edge."""
    h, w = img.shape[:2]
    x0 = rng.uniform(0, w)
    x1 = x0 + rng.normal(0, 0.05) * h
    band = int(rng.integers(3, 10))
    layer = np.zeros((h, w), np.float32)
    cv2.line(layer, (int(x0), 0), (int(x1), h - 1), 1.0, band, cv2.LINE_AA)
    img *= (1.0 - rng.uniform(0.15, 0.35) * layer)[:, :, None]
    edge = np.zeros((h, w), np.float32)
    off = band // 2 + 1
    cv2.line(edge, (int(x0) + off, 0), (int(x1) + off, h - 1), 1.0, 1, cv2.LINE_AA)
    img += (rng.uniform(8, 20) * edge)[:, :, None]


def _dust(rng: np.random.Generator, img: np.ndarray) -> None:
    """Light specks of dust and fines."""
    h, w = img.shape[:2]
    layer = np.zeros((h, w), np.float32)
    n = int(rng.integers(40, 200))
    for x, y, r, v in zip(rng.uniform(0, w, n), rng.uniform(0, h, n),
                          rng.choice([1, 1, 1, 2], n), rng.uniform(0.3, 1.0, n), strict=True):
        cv2.circle(layer, (int(x), int(y)), int(r), float(v), -1, cv2.LINE_AA)
    img += (rng.uniform(35, 80) * cv2.GaussianBlur(layer, (0, 0), 0.6))[:, :, None]


def _debris(rng: np.random.Generator, img: np.ndarray, dark: np.ndarray) -> None:
    """Small dark irregular bits (rubber crumbs, grime) that are background, not objects."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(3, 14))):
        r = rng.uniform(1.5, 5.0)
        n = int(rng.integers(4, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.5, 1.0, n)
        s = int(2 * r) + 4
        pts = np.stack([s / 2 + rad * np.cos(ang), s / 2 + rad * np.sin(ang)], axis=1)
        layer = np.zeros((s, s), np.float32)
        cv2.fillPoly(layer, [np.round(pts * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        blend(img, np.broadcast_to(dark, (s, s, 3)), layer,
              int(rng.uniform(0, w)) - s // 2, int(rng.uniform(0, h)) - s // 2)


def _metal_color(rng: np.random.Generator, label: int) -> np.ndarray:
    if label == 1:
        grey = rng.uniform(95, 205)
        tint = np.asarray(STEEL_TINTS[int(rng.integers(len(STEEL_TINTS)))], np.float32)
        return grey * tint * (1 + rng.uniform(-0.02, 0.02, 3)).astype(np.float32)
    if rng.random() < 0.6:
        return jitter_color(rng, COPPER_RGB, brightness=(0.6, 1.12), channel=0.07)
    return jitter_color(rng, BRASS_RGB, brightness=(0.65, 1.08), channel=0.05)


def metal_object(rng: np.random.Generator, label: int, extent: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One scrap piece: ``(S, S, 3) float32`` RGB and ``(S, S) float32`` coverage.

    ``label`` 1 renders steel (target), 2 copper or brass (anomaly).
    """
    cov = shape_coverage(SHAPES[int(rng.integers(len(SHAPES)))], rng, extent)
    s = cov.shape[0]
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / (s / 2) - 1.0
    t = rng.uniform(0, 2 * np.pi)
    lum = 1.0 + rng.uniform(0.1, 0.35) * (np.cos(t) * x + np.sin(t) * y)
    tex_name = ("gravel", "camera")[int(rng.integers(2))]
    lum += rng.uniform(0.03, 0.08) * texture_patch(rng, tex_name, s, s, zoom=(0.8, 2.0))
    lum += rng.uniform(0.02, 0.07) * streaks(rng, s, s, rng.uniform(0, np.pi), length=s / 2)
    inside = (cov >= 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    lum *= 1.0 - rng.uniform(0.15, 0.4) * np.exp(-dist / 1.5)
    base = _metal_color(rng, label)
    rgb = lum[:, :, None] * base
    rgb += _specular(rng, inside, base)
    rgb += rng.normal(0, 3.0, rgb.shape).astype(np.float32)
    return rgb, cov


def _specular(rng: np.random.Generator, inside: np.ndarray, base: np.ndarray) -> np.ndarray:
    """An elongated highlight centred on a random pixel of the object, tinted by the metal."""
    s = inside.shape[0]
    ys, xs = np.nonzero(inside)
    if ys.size == 0:
        return np.zeros((s, s, 3), np.float32)
    i = int(rng.integers(ys.size))
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    t = rng.uniform(0, np.pi)
    u = (x - xs[i]) * np.cos(t) + (y - ys[i]) * np.sin(t)
    v = -(x - xs[i]) * np.sin(t) + (y - ys[i]) * np.cos(t)
    su, sv = s * rng.uniform(0.1, 0.3), s * rng.uniform(0.03, 0.09)
    g = np.exp(-0.5 * ((u / su) ** 2 + (v / sv) ** 2)) * rng.uniform(0.15, 0.6)
    tint = 0.55 + 0.45 * base / max(float(base.max()), 1.0)
    return g[:, :, None] * (255.0 * tint)
