"""Shape coverage masks for synthetic objects, rendered 4x supersampled.

A shape is drawn as a binary mask at ``SS`` times the output resolution and averaged down, so
each output pixel holds the fraction of it that the shape covers. The scene uses that fraction
as the anti-aliased alpha and ``coverage >= 0.5`` as the exact label mask.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SS = 4  # supersampling factor


class Canvas:
    """A square supersampled drawing surface of ``size`` output pixels, origin at its centre."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.hi = np.zeros((self.size * SS, self.size * SS), np.uint8)

    def pts(self, xy: np.ndarray) -> np.ndarray:
        """Output-pixel coordinates relative to the centre -> int32 supersampled polygon."""
        return np.round((np.asarray(xy) + self.size / 2) * SS - 0.5).astype(np.int32)

    def coverage(self, hi: np.ndarray | None = None) -> np.ndarray:
        """``(size, size) float32`` fraction of each output pixel covered (0..1)."""
        src = self.hi if hi is None else hi
        small = cv2.resize(src, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32) / 255.0


def rotate(xy: np.ndarray, theta: float) -> np.ndarray:
    """Rotate ``(N, 2)`` points by ``theta`` radians about the origin."""
    c, s = np.cos(theta), np.sin(theta)
    return xy @ np.array([[c, s], [-s, c]], dtype=np.float64)


def fill(canvas: Canvas, xy: np.ndarray, value: int = 255) -> None:
    """Fill the polygon ``xy`` (output pixels, centre origin) on ``canvas``."""
    cv2.fillPoly(canvas.hi, [canvas.pts(xy)], value)


def _polygon(rng: np.random.Generator, r: float) -> np.ndarray:
    n = int(rng.integers(4, 9))
    ang = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n  # no slivers
    rad = r * rng.uniform(0.55, 1.0, n)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def _rounded_rect(rng: np.random.Generator, r: float, aspect: tuple[float, float] = (1.0, 3.0)
                  ) -> np.ndarray:
    a = r
    b = r / rng.uniform(*aspect)
    rc = min(a, b) * rng.uniform(0.1, 0.6)
    pts = []
    for cx, cy, start in ((a - rc, b - rc, 0), (-a + rc, b - rc, 90), (-a + rc, -b + rc, 180),
                          (a - rc, -b + rc, 270)):
        t = np.radians(np.linspace(start, start + 90, 7))
        pts.append(np.stack([cx + rc * np.cos(t), cy + rc * np.sin(t)], axis=1))
    return np.concatenate(pts)


def _l_shape(rng: np.random.Generator, r: float) -> np.ndarray:
    a, b = r, r * rng.uniform(0.5, 1.0)
    t = r * rng.uniform(0.25, 0.45)
    pts = np.array([[0, 0], [a, 0], [a, t], [t, t], [t, b], [0, b]], dtype=np.float64)
    return pts - pts.mean(axis=0)


def _blob(rng: np.random.Generator, r: float, jagged: float = 0.0, n: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rad = np.ones_like(t)
    for k in range(2, 7):
        rad += rng.normal(0, 0.14 / np.sqrt(k)) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rad += rng.normal(0, jagged, t.size)
    rad = r * np.clip(rad, 0.35, None) / rad.max()
    return np.stack([rad * np.cos(t), rad * np.sin(t)], axis=1)


def _shape_ring(canvas: Canvas, rng: np.random.Generator, r: float) -> None:
    c = (canvas.size * SS // 2, canvas.size * SS // 2)
    axes = (int(r * SS), int(r * SS * rng.uniform(0.8, 1.0)))
    ang = rng.uniform(0, 180)
    cv2.ellipse(canvas.hi, c, axes, ang, 0, 360, 255, -1)
    k = rng.uniform(0.35, 0.65)
    cv2.ellipse(canvas.hi, c, (int(axes[0] * k), int(axes[1] * k)), ang, 0, 360, 0, -1)


def _shape_ellipse(canvas: Canvas, rng: np.random.Generator, r: float) -> None:
    c = (canvas.size * SS // 2, canvas.size * SS // 2)
    axes = (int(r * SS), int(r * SS / rng.uniform(1.0, 2.5)))
    cv2.ellipse(canvas.hi, c, axes, rng.uniform(0, 180), 0, 360, 255, -1)


def _poly_shape(make: Callable[[np.random.Generator, float], np.ndarray]
                ) -> Callable[[Canvas, np.random.Generator, float], None]:
    def draw(canvas: Canvas, rng: np.random.Generator, r: float) -> None:
        xy = make(rng, r)
        xy *= r / np.linalg.norm(xy, axis=1).max()  # the farthest point sits at radius r
        fill(canvas, rotate(xy, rng.uniform(0, 2 * np.pi)))
    return draw


SHAPES: dict[str, Callable[[Canvas, np.random.Generator, float], None]] = {
    "polygon": _poly_shape(_polygon),
    "rounded_rect": _poly_shape(_rounded_rect),
    "rod": _poly_shape(lambda rng, r: _rounded_rect(rng, r, aspect=(3.5, 7.0))),
    "ellipse": _shape_ellipse,
    "l_shape": _poly_shape(_l_shape),
    "ring": _shape_ring,
    "blob": _poly_shape(_blob),
    "scrap": _poly_shape(lambda rng, r: _blob(rng, r, jagged=0.06, n=int(rng.integers(14, 30)))),
}


def shape_coverage(kind: str, rng: np.random.Generator, extent: float) -> np.ndarray:
    """Coverage of one random ``kind`` shape about ``extent`` pixels across.

    Returns:
        ``(S, S) float32`` in [0, 1], S slightly larger than ``extent``, shape centred.
    """
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}; choose from {', '.join(SHAPES)}")
    canvas = Canvas(int(np.ceil(extent * 1.15)) + 4)
    SHAPES[kind](canvas, rng, extent / 2)
    return canvas.coverage()


Box = tuple[tuple[slice, slice], tuple[slice, slice]]


def clip_box(shape: tuple[int, ...], x0: int, y0: int, sh: int, sw: int) -> Box | None:
    """Slices of an image of ``shape`` and of a ``(sh, sw)`` patch placed at ``(x0, y0)``.

    Returns ``None`` when the patch lies entirely outside the image.
    """
    h, w = shape[:2]
    ax, ay, bx, by = max(x0, 0), max(y0, 0), min(x0 + sw, w), min(y0 + sh, h)
    if ax >= bx or ay >= by:
        return None
    return (slice(ay, by), slice(ax, bx)), (slice(ay - y0, by - y0), slice(ax - x0, bx - x0))


def blend(img: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-composite an ``(S, S, 3)`` patch onto ``(H, W, 3) float32`` ``img`` in place."""
    box = clip_box(img.shape, x0, y0, *alpha.shape)
    if box is None:
        return
    (iy, ix), (py, px) = box
    a = alpha[py, px, None]
    img[iy, ix] = img[iy, ix] * (1.0 - a) + rgb[py, px] * a
