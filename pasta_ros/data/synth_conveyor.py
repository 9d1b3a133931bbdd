"""The conveyor presets of issue 9: dense belts, thin objects, distractors, other looks.

Targets are grey metals (steel, aluminium), anomalies are coloured metals (copper, brass,
bronze). Every set, empty scenes included, holds distractors (paper labels, dirt smears) that
are background in the masks. Options per preset (:class:`ConveyorOptions`): the belt look, the
share of objects placed touching or overlapping another (``touch``), the share of thin objects
(wires, rods), the object scale (camera height), a scene-wide lighting gradient and motion blur
along the belt. Masks stay exact: a pixel belongs to the topmost pasted object covering at least
half of it; blur and light change the image only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from pasta_ros.data.synth_shapes import SS, Canvas, blend, clip_box, shape_coverage
from pasta_ros.data.synth_steel import _specular
from pasta_ros.data.synth_textures import (
    jitter_color,
    smooth_noise,
    streaks,
    texture_patch,
)

LOOKS = {  # name: (belt RGB, skimage texture, zoom range, texture amplitude, weave period px)
    "green_pvc": ((62.0, 112.0, 74.0), "grass", (0.3, 0.6), 0.06, 0),
    "black_rubber": ((36.0, 36.0, 40.0), "gravel", (0.4, 0.7), 0.14, 0),
    "tan_canvas": ((168.0, 148.0, 116.0), "brick", (0.2, 0.4), 0.05, 4),
    "blue_mesh": ((66.0, 88.0, 128.0), "moon", (0.8, 1.4), 0.08, 7),
}
TARGET_METALS = ((150.0, 150.0, 152.0), (196.0, 200.0, 208.0))  # steel, aluminium
ANOMALY_METALS = ((196.0, 104.0, 62.0), (204.0, 168.0, 84.0), (150.0, 104.0, 64.0))
BODY_SHAPES = ("polygon", "rounded_rect", "ellipse", "l_shape", "ring", "blob", "scrap")


@dataclass(frozen=True)
class ConveyorOptions:
    """What a conveyor preset varies. Sizes are for a 512 px short image side."""

    look: str = "green_pvc"
    touch: float = 0.4  # share of objects placed touching or overlapping an earlier one
    thin: float = 0.15  # share of thin objects (wires, rods)
    scale: float = 1.0  # object scale: camera height (x0.5 high .. x2 low)
    gradient: bool = True  # scene-wide lighting gradient, objects included
    blur: bool = False  # motion blur along the belt

    def check(self) -> ConveyorOptions:
        if self.look not in LOOKS:
            raise ValueError(f"unknown belt look {self.look!r}; choose from {', '.join(LOOKS)}")
        for name, lo, hi in (("touch", 0.0, 1.0), ("thin", 0.0, 1.0), ("scale", 0.5, 2.0)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
        return self


CONVEYOR_PRESETS: dict[str, ConveyorOptions] = {
    "belt_dense_dev": ConveyorOptions("green_pvc", 0.35, 0.15, 1.0, True, False),
    "belt_thin_dev": ConveyorOptions("green_pvc", 0.15, 0.5, 1.0, True, True),
    "belt_far_dev": ConveyorOptions("black_rubber", 0.25, 0.15, 0.6, False, True),
    "belt_dense": ConveyorOptions("tan_canvas", 0.35, 0.15, 1.0, True, True),
    "belt_dense_near": ConveyorOptions("blue_mesh", 0.45, 0.15, 1.6, True, False),
    "belt_thin": ConveyorOptions("blue_mesh", 0.15, 0.5, 0.6, True, True),
}


def conveyor_options(preset: str, **overrides) -> ConveyorOptions:
    """The options of ``preset`` with the non-None ``overrides`` applied; validated."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(CONVEYOR_PRESETS[preset], **changes).check()


def belt(rng: np.random.Generator, h: int, w: int, look: str) -> np.ndarray:
    """An empty belt of ``look`` with distractors: ``(h, w, 3) float32`` RGB."""
    rgb, tex_name, zoom, amp, weave = LOOKS[look]
    color = jitter_color(rng, rgb, brightness=(0.85, 1.15), channel=0.05)
    lum = 1.0 + amp * texture_patch(rng, tex_name, h, w, zoom=zoom)
    lum += 0.04 * streaks(rng, h, w, angle=rng.normal(0, 0.01), length=w / 3)
    lum += 0.04 * smooth_noise(rng, h, w, cell=h / 3)
    if weave:
        y, x = np.mgrid[0:h, 0:w]
        lum *= 1.0 - 0.08 * ((x % weave == 0) | (y % weave == 0))
    img = lum[:, :, None] * color
    distractors(rng, img)
    return img.astype(np.float32)


def distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    """Paper labels (white, cream or yellow, with dark print) and dirt smears, in place."""
    h, w = img.shape[:2]
    s = min(h, w) / 512
    for _ in range(int(rng.integers(0, 4))):
        lw, lh = rng.uniform(22, 60) * s, rng.uniform(14, 36) * s
        paper = np.asarray(((236, 234, 226), (238, 226, 190), (240, 222, 110))[
            int(rng.integers(3))], np.float32)
        size = int(np.hypot(lw, lh)) + 4
        layer = np.zeros((size, size), np.float32)
        box = cv2.boxPoints(((size / 2, size / 2), (lw, lh), rng.uniform(0, 180)))
        cv2.fillPoly(layer, [np.round(box * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        ink = np.broadcast_to(paper, (size, size, 3)).copy()
        rows = (np.arange(size) % max(int(5 * s), 3)) == 0
        ink[rows] *= 0.45
        blend(img, ink, layer, int(rng.uniform(0, w)) - size // 2,
              int(rng.uniform(0, h)) - size // 2)
    for _ in range(int(rng.integers(1, 6))):
        r = rng.uniform(6, 28) * s
        size = int(2 * r) + 6
        layer = np.zeros((size, size), np.float32)
        cv2.ellipse(layer, (size // 2, size // 2), (int(r), int(r * rng.uniform(0.4, 1.0))),
                    rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), r / 4) * rng.uniform(0.3, 0.6)
        dirt = np.asarray((88, 70, 52), np.float32) * rng.uniform(0.7, 1.1)
        blend(img, np.broadcast_to(dirt, (size, size, 3)), layer,
              int(rng.uniform(0, w)) - size // 2, int(rng.uniform(0, h)) - size // 2)


def wire_coverage(rng: np.random.Generator, extent: float, width: float) -> np.ndarray:
    """A bent wire about ``extent`` px long and ``width`` px thick: ``(S, S) float32``."""
    canvas = Canvas(int(np.ceil(extent * 1.1)) + 6)
    n = 6
    t = np.linspace(-0.5, 0.5, n) * extent * 0.9
    bend = np.cumsum(rng.normal(0, 0.25, n)) * extent * 0.12
    theta = rng.uniform(0, np.pi)
    c, s = np.cos(theta), np.sin(theta)
    xy = np.stack([t * c - bend * s, t * s + bend * c], 1)
    cv2.polylines(canvas.hi, [canvas.pts(xy)], False, 255,
                  thickness=max(int(round(width * SS)), SS), lineType=cv2.LINE_8)
    return canvas.coverage()


def object_coverage(rng: np.random.Generator, extent: float, thin: bool,
                    scale: float) -> np.ndarray:
    """Coverage of one object: a body shape, or a wire / rod when ``thin``."""
    if not thin:
        return shape_coverage(BODY_SHAPES[int(rng.integers(len(BODY_SHAPES)))], rng, extent)
    if rng.random() < 0.5:
        return wire_coverage(rng, extent * 1.3, rng.uniform(3.0, 6.0) * scale)
    return shape_coverage("rod", rng, extent * 1.2)


def metal_color(rng: np.random.Generator, label: int) -> np.ndarray:
    metals = TARGET_METALS if label == 1 else ANOMALY_METALS
    base = metals[int(rng.integers(len(metals)))]
    return jitter_color(rng, base, brightness=(0.7, 1.15), channel=0.04)


def shade_object(rng: np.random.Generator, cov: np.ndarray, label: int) -> np.ndarray:
    """``(S, S, 3) float32`` RGB of a metal piece with shading, texture and a highlight."""
    s = cov.shape[0]
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) / (s / 2) - 1.0
    t = rng.uniform(0, 2 * np.pi)
    lum = 1.0 + rng.uniform(0.1, 0.3) * (np.cos(t) * x + np.sin(t) * y)
    lum += rng.uniform(0.03, 0.07) * texture_patch(rng, "gravel", s, s, zoom=(0.8, 2.0))
    inside = (cov >= 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    lum *= 1.0 - rng.uniform(0.15, 0.35) * np.exp(-dist / 1.5)
    base = metal_color(rng, label)
    rgb = lum[:, :, None] * base + _specular(rng, inside, base)
    return rgb + rng.normal(0, 3.0, rgb.shape).astype(np.float32)


def place_touching(rng: np.random.Generator, mask: np.ndarray, instances: np.ndarray,
                   ) -> tuple[int, int] | None:
    """Top-left corner that puts ``mask`` against (or slightly over) a placed object.

    An earlier object is picked at random; the new one starts on its centroid and moves out
    along a random direction until it overlaps the placed objects by at most a random
    0-12 % of its own area. None when nothing is placed yet.
    """
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if ids.size == 0:
        return None
    ys, xs = np.nonzero(instances == ids[int(rng.integers(ids.size))])
    cy, cx = ys.mean(), xs.mean()
    theta = rng.uniform(0, 2 * np.pi)
    limit = rng.uniform(0.0, 0.12) * max(int(mask.sum()), 1)
    s = mask.shape[0]
    occupied = instances > 0
    for step in range(0, 4 * s, 2):
        x0 = int(cx + step * np.cos(theta) - s / 2)
        y0 = int(cy + step * np.sin(theta) - s / 2)
        box = clip_box(occupied.shape, x0, y0, s, s)
        if box is None:
            return None
        (iy, ix), (py, px) = box
        if np.count_nonzero(occupied[iy, ix] & mask[py, px]) <= limit:
            return x0, y0
    return None


def touching_share(instances: np.ndarray) -> tuple[int, int]:
    """(objects touching another, objects) of an ``(H, W)`` instance image (8-neighbours)."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    touching = 0
    for i in ids:
        m = (instances == i).astype(np.uint8)
        ring = cv2.dilate(m, np.ones((3, 3), np.uint8)).astype(bool) & ~m.astype(bool)
        touching += bool(np.any(instances[ring] > 0))
    return touching, int(ids.size)


def motion_blur(img: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Blur along the belt (x) by a 3-9 px (times ``scale``) box kernel."""
    n = max(int(round(rng.uniform(3, 9) * scale)), 2)
    kernel = np.full((1, n), 1.0 / n, np.float32)
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
