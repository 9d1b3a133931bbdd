"""Synthetic defects that look like those of electroluminescence (EL) images of solar cells,
pasted on real normal images (the k shots) for test-time adaptation and calibration.

EL defects are darker than the cell around them (the cell emits less light there): thin
cracks, long and nearly straight, sometimes branching or crossing; dark inactive areas cut
off by a crack; small dark spots; low-contrast blotches. Each is drawn as a coverage map
``cov`` in [0, 1] (4x supersampled) and composited as a multiplicative darkening
``img * (1 - (1 - gain) * cov)``, so the cell's own texture (fingers, busbars, grain) stays
visible through the defect, as it does in EL. The defect mask is ``cov >= 0.5``.
"""

from __future__ import annotations

import cv2
import numpy as np

SS = 4  # supersampling factor of the coverage maps
EL_DEFECTS = ("crack", "cracks", "inactive", "spot", "blotch")


def _line(rng: np.random.Generator, size: int, length: float, wander: float) -> np.ndarray:
    """``(n, 2)`` float64 polyline of about ``length`` pixels, starting anywhere (a quarter
    of the time on the border, where cell cracks often start)."""
    p = rng.uniform(0.05, 0.95, 2) * size
    if rng.random() < 0.25:
        p[int(rng.integers(2))] = float(rng.choice([0.0, size - 1.0]))
    ang, n = rng.uniform(0, 2 * np.pi), int(rng.integers(3, 8))
    pts = [p.copy()]
    for _ in range(n):
        ang += rng.normal(0, wander)
        p = p + (length / n) * np.array([np.cos(ang), np.sin(ang)])
        pts.append(p.copy())
    return np.asarray(pts)


def _draw_lines(size: int, lines: list[np.ndarray], thick: float) -> np.ndarray:
    hi = np.zeros((size * SS, size * SS), np.uint8)
    t = max(1, int(round(SS * thick)))
    for pts in lines:
        cv2.polylines(hi, [np.round(pts * SS).astype(np.int32)], False, 255, t, cv2.LINE_AA)
    return cv2.resize(hi, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _crack(rng: np.random.Generator, size: int, many: bool) -> np.ndarray:
    """One long thin crack (with a branch half the time), or a small network of them."""
    n = int(rng.integers(3, 7)) if many else 1
    length = size * rng.uniform(0.15, 0.35) if many else size * rng.uniform(0.25, 0.9)
    lines = [_line(rng, size, length, rng.uniform(0.02, 0.3)) for _ in range(n)]
    if many:  # a network: the other lines start near the first one
        centre = lines[0][len(lines[0]) // 2]
        lines = [lines[0]] + [ln - ln[0] + centre + rng.normal(0, size * 0.05, 2)
                              for ln in lines[1:]]
    elif rng.random() < 0.5:
        b = lines[0][int(rng.integers(1, len(lines[0])))]
        lines.append(b + np.cumsum(rng.normal(0, size * 0.04, (4, 2)), 0))
    return _draw_lines(size, lines, max(1.0, rng.uniform(0.6, 1.6) * size / 224))


def _blob(rng: np.random.Generator, size: int, extent: float, aspect: float,
          rough: float) -> np.ndarray:
    """An elongated blob about ``extent`` pixels long with a ragged border, anywhere."""
    n, extent = 24, max(extent, 3.0)
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = np.convolve(np.tile(rng.normal(0, 1, n), 3), np.ones(3) / 3, "same")[n:2 * n]
    rad = np.clip(1.0 + rough * wobble, 0.3, None)
    theta = rng.uniform(0, np.pi)
    xy = np.stack([extent / 2 * rad * np.cos(ang), extent / (2 * aspect) * rad * np.sin(ang)], 1)
    c, s = np.cos(theta), np.sin(theta)
    xy = xy @ np.array([[c, s], [-s, c]]) + rng.uniform(0.1, 0.9, 2) * size
    hi = np.zeros((size * SS, size * SS), np.uint8)
    cv2.fillPoly(hi, [np.round(xy * SS).astype(np.int32)], 255, cv2.LINE_AA)
    return cv2.resize(hi, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _inactive(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark inactive area: either a ragged elongated blob or the part of the cell beyond a
    straight crack (a half-plane cut off near a corner or an edge)."""
    if rng.random() < 0.6:
        return _blob(rng, size, size * rng.uniform(0.2, 0.7), rng.uniform(1.5, 5.0), 0.25)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    d = (xx - size / 2) * np.cos(theta) + (yy - size / 2) * np.sin(theta)
    cut = size * rng.uniform(0.15, 0.45)  # distance of the crack from the centre
    return np.clip(d - cut + 0.5, 0, 1).astype(np.float32)


def el_defect(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, float]:
    """Coverage ``(size, size) float32`` in [0, 1] of one defect of ``kind`` (EL_DEFECTS) and
    its brightness gain in (0, 1) (0 = black)."""
    if kind == "crack":
        return _crack(rng, size, False), float(rng.uniform(0.25, 0.7))
    if kind == "cracks":
        return _crack(rng, size, True), float(rng.uniform(0.3, 0.7))
    if kind == "inactive":
        return _inactive(rng, size), float(rng.uniform(0.1, 0.5))
    if kind == "spot":
        return _blob(rng, size, size * rng.uniform(0.02, 0.06), rng.uniform(1, 2), 0.2), \
            float(rng.uniform(0.2, 0.6))
    if kind == "blotch":
        cov = _blob(rng, size, size * rng.uniform(0.1, 0.35), rng.uniform(1, 3), 0.3)
        return cv2.GaussianBlur(cov, (0, 0), size * 0.015), float(rng.uniform(0.6, 0.85))
    raise ValueError(f"unknown EL defect {kind!r}; choose from {', '.join(EL_DEFECTS)}")


def paste_el_defects(rng: np.random.Generator, image: np.ndarray, n_defects: int = 1,
                     kinds: tuple[str, ...] = EL_DEFECTS) -> tuple[np.ndarray, np.ndarray]:
    """``n_defects`` EL-like defects of random kinds on a copy of ``image``: ``(H, W, 3)
    uint8`` -> same-shape ``uint8`` image and ``(H, W) bool`` defect mask (coverage >= 0.5;
    a blotch's blurred rim below 0.5 is not counted). Any aspect ratio: coverage is drawn on
    the long side's square and cropped."""
    h, w = image.shape[:2]
    size = max(h, w)
    img = image.astype(np.float32)
    mask = np.zeros((h, w), bool)
    for _ in range(n_defects):
        cov, gain = el_defect(rng, str(rng.choice(kinds)), size)
        cov = np.ascontiguousarray(cov[:h, :w])
        mask |= cov >= 0.5
        img *= (1.0 - (1.0 - gain) * cov)[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask
