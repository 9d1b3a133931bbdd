"""The *plants* preset: a field seen from a weeding robot; crop = target, weeds = anomaly.

Soil comes from a real ``gravel`` texture with moisture patches, small stones and dry straw as
clutter. Crops are rosettes of broad obovate leaves on short stalks; weeds are grass tufts,
chickweed-like clusters of small leaves, clover trefoils or lobed dandelion rosettes. Both share
one green palette, so shape and leaf arrangement, not colour, set them apart.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pasta_ros.data.synth_shapes import SS, Canvas, blend, rotate
from pasta_ros.data.synth_textures import (
    illumination,
    jitter_color,
    smooth_noise,
    texture_patch,
)

SOIL_RGB = (112.0, 84.0, 62.0)
STONE_RGB = (150.0, 140.0, 124.0)
STRAW_RGB = (170.0, 148.0, 100.0)
CROP_RGB = (66.0, 118.0, 44.0)
WEED_RGB = (72.0, 122.0, 46.0)


def soil_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Bare soil with stones and straw: ``(h, w, 3) float32`` RGB in [0, 255]."""
    color = jitter_color(rng, SOIL_RGB, brightness=(0.7, 1.2), channel=0.06)
    tex = 0.6 * texture_patch(rng, "gravel", h, w, zoom=(0.5, 0.9))
    tex += 0.5 * texture_patch(rng, "gravel", h, w, zoom=(0.25, 0.4))
    tex = cv2.GaussianBlur(tex, (0, 0), 0.9)
    moist = smooth_noise(rng, h, w, cell=h / 4)
    lum = 1.0 + 0.13 * tex + 0.1 * moist
    lum *= illumination(rng, h, w, gradient=rng.uniform(0.05, 0.2),
                        vignette=rng.uniform(0.05, 0.2))
    img = lum[:, :, None] * color
    for _ in range(int(rng.integers(5, 30))):
        _stone(rng, img)
    _straw(rng, img)
    return img


def _stone(rng: np.random.Generator, img: np.ndarray) -> None:
    r = rng.uniform(2.0, 7.0)
    canvas = Canvas(int(2 * r) + 4)
    c = canvas.size * SS // 2
    cv2.ellipse(canvas.hi, (c, c), (int(r * SS), int(r * SS * rng.uniform(0.5, 1.0))),
                rng.uniform(0, 180), 0, 360, 255, -1)
    cov = canvas.coverage()
    s = cov.shape[0]
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / (s / 2) - 1.0
    lum = 1.0 - 0.25 * (x + y) / 2
    rgb = lum[:, :, None] * jitter_color(rng, STONE_RGB, brightness=(0.6, 1.2), channel=0.05)
    h, w = img.shape[:2]
    blend(img, rgb, cov, int(rng.uniform(0, w)), int(rng.uniform(0, h)))


def _straw(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    layer = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(3, 22))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        length, t = rng.uniform(6, 30), rng.uniform(0, np.pi)
        p0 = (int(x * 16), int(y * 16))
        p1 = (int((x + length * np.cos(t)) * 16), int((y + length * np.sin(t)) * 16))
        cv2.line(layer, p0, p1, rng.uniform(0.5, 1.0), 1, cv2.LINE_AA, shift=4)
    color = jitter_color(rng, STRAW_RGB, brightness=(0.7, 1.1), channel=0.05)
    img *= (1.0 - layer)[:, :, None]
    img += layer[:, :, None] * color


# --------------------------------------------------------------------------- leaves


def leaf_outline(length: float, width: float, *, q: float = 1.0, lobes: int = 0,
                 lobe_depth: float = 0.0, n: int = 28) -> np.ndarray:
    """Leaf polygon in its own frame: base at (0, 0), tip at (length, 0).

    ``q`` < 1 puts the widest point near the base (ovate), > 1 near the tip (obovate);
    ``lobes`` notches the margin (dandelion-like) by ``lobe_depth`` of the half-width.
    """
    s = np.linspace(0.0, 1.0, n)
    half = width / 2 * np.sin(np.pi * s**q) ** 0.8
    if lobes:
        half *= 1.0 - lobe_depth * np.abs(np.sin(lobes * np.pi * s)) ** 0.6
    upper = np.stack([length * s, half], axis=1)
    lower = np.stack([length * s[::-1], -half[::-1]], axis=1)
    return np.concatenate([upper, lower])


class Leaf:
    """One leaf placed on a plant canvas: base point, direction, size and leaf shape options."""

    def __init__(self, base: np.ndarray, angle: float, length: float, width: float,
                 **shape: float) -> None:
        self.base, self.angle, self.length, self.width = base, angle, length, width
        self.shape = shape

    def raster(self, s: int) -> tuple[np.ndarray, int, int]:
        """Supersampled uint8 mask of the leaf's bounding box on an ``s x s`` plant canvas.

        Returns the mask (``SS`` times the box size) and the box's top-left ``(x0, y0)`` in
        canvas pixels; the box is clipped to the canvas and may be empty.
        """
        xy = rotate(leaf_outline(self.length, self.width, **self.shape), self.angle)
        xy = xy + self.base + s / 2
        x0, y0 = (max(int(np.floor(v)) - 1, 0) for v in xy.min(axis=0))
        x1, y1 = (min(int(np.ceil(v)) + 1, s) for v in xy.max(axis=0))
        hi = np.zeros((max(y1 - y0, 0) * SS, max(x1 - x0, 0) * SS), np.uint8)
        if hi.size:
            cv2.fillPoly(hi, [np.round((xy - (x0, y0)) * SS - 0.5).astype(np.int32)], 255)
        return hi, x0, y0

    def shading(self, rng: np.random.Generator, s: int, box: tuple[int, int, int, int],
                chevron: bool = False) -> np.ndarray:
        """Luminance over ``box = (x0, y0, w, h)``: midrib, oblique veins, edge falloff, fold."""
        x0, y0, bw, bh = box
        y, x = np.mgrid[y0:y0 + bh, x0:x0 + bw].astype(np.float32) + 0.5 - s / 2
        c, sn = np.cos(self.angle), np.sin(self.angle)
        u = ((x - self.base[0]) * c + (y - self.base[1]) * sn) / self.length
        v = (-(x - self.base[0]) * sn + (y - self.base[1]) * c) / (self.width / 2 + 1e-6)
        av = np.abs(v)
        lum = 1.0 + 0.12 * (u - 0.5) - 0.22 * av**2 + 0.06 * np.sign(v) * rng.choice([-1, 1])
        midrib = np.exp(-((v * self.width / 2) ** 2) / 0.8) * (u < 0.9)
        lum += rng.uniform(0.1, 0.22) * midrib
        period = rng.uniform(0.12, 0.2)
        veins = np.clip(np.cos(2 * np.pi * (u - 0.5 * av) / period), 0, None) ** 10
        lum += rng.uniform(0.04, 0.1) * veins * (av > 0.08)
        if chevron:
            lum += 0.3 * (np.abs(u - 0.45 - 0.25 * av) < 0.07)
        return lum


def _render_leaves(rng: np.random.Generator, s: int, leaves: list[Leaf], color: np.ndarray,
                   *, chevron: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Composite leaves in order; returns ``(s, s, 3) float32`` RGB and union coverage."""
    union = np.zeros((s * SS, s * SS), np.uint8)
    rgb = np.zeros((s, s, 3), np.float32)
    tex = texture_patch(rng, "moon", s, s, zoom=(0.4, 1.0))
    tex += texture_patch(rng, "gravel", s, s, zoom=(1.0, 2.0))
    for leaf in leaves:
        hi, x0, y0 = leaf.raster(s)
        if hi.size == 0:
            continue
        bh, bw = hi.shape[0] // SS, hi.shape[1] // SS
        union[y0 * SS:(y0 + bh) * SS, x0 * SS:(x0 + bw) * SS] |= hi
        cov = cv2.resize(hi, (bw, bh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        lum = leaf.shading(rng, s, (x0, y0, bw, bh), chevron)
        lum += 0.05 * tex[y0:y0 + bh, x0:x0 + bw]
        blend(rgb, lum[:, :, None] * color * rng.uniform(0.9, 1.1), cov, x0, y0)
    rgb += rng.normal(0, 2.5, rgb.shape).astype(np.float32)
    cov = cv2.resize(union, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return rgb, cov


def _polar(r: float, t: float) -> np.ndarray:
    return np.array([r * np.cos(t), r * np.sin(t)])


# --------------------------------------------------------------------------- plants


def _crop(rng: np.random.Generator, r: float) -> list[Leaf]:
    """Sugar-beet-like rosette: broad obovate leaves on stalks, small young leaves on top."""
    n = int(rng.integers(3, 9))
    t0 = rng.uniform(0, 2 * np.pi)
    leaves = []
    for i in range(n):
        t = t0 + 2 * np.pi * i / n + rng.normal(0, 0.2)
        length = r * rng.uniform(0.75, 1.0)
        stalk = length * rng.uniform(0.15, 0.3)
        leaves.append(Leaf(_polar(1.5, t), t, stalk + 1.5, max(2.0, r * 0.06), q=1.0))
        leaves.append(Leaf(_polar(stalk, t), t, length - stalk,
                           (length - stalk) * rng.uniform(0.5, 0.7), q=rng.uniform(1.1, 1.5)))
    for _ in range(int(rng.integers(1, 4))):
        t = rng.uniform(0, 2 * np.pi)
        length = r * rng.uniform(0.3, 0.45)
        leaves.append(Leaf(_polar(1.0, t), t, length, length * 0.55, q=1.2))
    return leaves


def _grass(rng: np.random.Generator, r: float) -> list[Leaf]:
    """A grass tuft: thin blades fanning out from one base."""
    t0 = rng.uniform(0, 2 * np.pi)
    spread = rng.uniform(0.8, 2 * np.pi)
    base = _polar(rng.uniform(0, 0.15 * r), rng.uniform(0, 2 * np.pi))
    return [Leaf(base, t0 + rng.uniform(-spread / 2, spread / 2), r * rng.uniform(0.6, 0.95),
                 rng.uniform(2.0, 4.0) * max(1.0, r / 50), q=0.35)
            for _ in range(int(rng.integers(4, 13)))]


def _stem(base: np.ndarray, t: float, length: float, width: float) -> Leaf:
    return Leaf(base, t, length, width, q=1.0)


def _chickweed(rng: np.random.Generator, r: float) -> list[Leaf]:
    """Many small oval leaves in opposite pairs along short stems."""
    leaves: list[Leaf] = []
    for _ in range(int(rng.integers(3, 7))):
        t = rng.uniform(0, 2 * np.pi)
        reach = r * rng.uniform(0.45, 0.75)
        leaves.append(_stem(np.zeros(2), t, reach, max(1.5, r * 0.04)))
        for d in np.linspace(0.3, 1.0, int(rng.integers(2, 5))) * reach:
            size = r * rng.uniform(0.2, 0.3)
            for side in (-1.0, 1.0):
                tl = t + side * rng.uniform(0.5, 1.1)
                leaves.append(Leaf(_polar(d, t), tl, size, size * 0.6, q=0.9))
    return leaves


def _clover(rng: np.random.Generator, r: float) -> list[Leaf]:
    """Clover: trefoils of three obovate leaflets (drawn with the pale chevron) on stalks."""
    leaves: list[Leaf] = []
    for _ in range(int(rng.integers(2, 6))):
        t, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.55) * r
        centre = _polar(d, t)
        leaves.insert(0, _stem(np.zeros(2), t, d, max(1.5, r * 0.035)))
        size, t0 = r * rng.uniform(0.3, 0.42), rng.uniform(0, 2 * np.pi)
        for k in range(3):
            t = t0 + 2 * np.pi * k / 3
            leaves.append(Leaf(centre, t, size, size * rng.uniform(0.9, 1.1), q=1.6))
    return leaves


def _dandelion(rng: np.random.Generator, r: float) -> list[Leaf]:
    """Dandelion-like rosette: long narrow leaves with deep lobes."""
    n = int(rng.integers(4, 9))
    t0 = rng.uniform(0, 2 * np.pi)
    return [Leaf(_polar(1.0, t0 + 2 * np.pi * i / n), t0 + 2 * np.pi * i / n + rng.normal(0, .2),
                 r * rng.uniform(0.7, 1.0), r * rng.uniform(0.25, 0.35), q=1.3,
                 lobes=int(rng.integers(3, 6)), lobe_depth=rng.uniform(0.35, 0.6))
            for i in range(n)]


WEEDS: dict[str, Callable[[np.random.Generator, float], list[Leaf]]] = {
    "grass": _grass, "chickweed": _chickweed, "clover": _clover, "dandelion": _dandelion,
}


def plant_object(rng: np.random.Generator, label: int, extent: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One plant: ``(S, S, 3) float32`` RGB and ``(S, S) float32`` coverage.

    ``label`` 1 renders a crop rosette (target), 2 a weed of a random kind (anomaly).
    """
    s = int(np.ceil(extent * 1.15)) + 4
    r = extent / 2
    if label == 1:
        leaves = _crop(rng, r)
        color = jitter_color(rng, CROP_RGB, brightness=(0.75, 1.2), channel=0.08)
        return _render_leaves(rng, s, leaves, color)
    kind = tuple(WEEDS)[int(rng.integers(len(WEEDS)))]
    color = jitter_color(rng, WEED_RGB, brightness=(0.75, 1.2), channel=0.1)
    return _render_leaves(rng, s, WEEDS[kind](rng, r), color, chevron=kind == "clover")
