"""Per-instance descriptors for the object-level PASTA variant: pooled patch features + shape.

Shape (4 numbers per instance, from its pixel mask):
- log area (pixels at the network size);
- elongation ``1 - minor / major`` from the second moments (0 disc .. 1 line);
- solidity ``area / convex hull area`` (1 convex .. small for lobed or branching shapes);
- contour curvature: mean absolute turning angle between successive segments of the contour
  simplified to 1.5 px, in radians (smooth outline ~ small, jagged leaves ~ large).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage

SHAPE_NAMES = ("log_area", "elongation", "solidity", "curvature")


def shape_features(mask: np.ndarray) -> np.ndarray:
    """``(h, w) bool`` instance mask -> ``(4,) float32`` (see :data:`SHAPE_NAMES`)."""
    m = mask.astype(np.uint8)
    area = float(m.sum())
    if area == 0:
        return np.zeros(4, np.float32)
    mo = cv2.moments(m, binaryImage=True)
    mu20, mu02, mu11 = mo["mu20"] / area, mo["mu02"] / area, mo["mu11"] / area
    common = np.sqrt(max(0.0, ((mu20 - mu02) / 2) ** 2 + mu11 ** 2))
    major = (mu20 + mu02) / 2 + common
    minor = max(0.0, (mu20 + mu02) / 2 - common)
    elongation = 1.0 - np.sqrt(minor / major) if major > 0 else 0.0
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.contourArea(cv2.convexHull(contour))
    solidity = min(1.0, area / hull) if hull > 0 else 1.0
    return np.array([np.log(area), elongation, solidity, turning(contour)], np.float32)


def turning(contour: np.ndarray) -> float:
    """Mean absolute turning angle (radians) along a closed ``(P, 1, 2)`` contour."""
    pts = cv2.approxPolyDP(contour, 1.5, True).reshape(-1, 2).astype(np.float64)
    if len(pts) < 3:
        return 0.0
    seg = np.diff(np.vstack([pts, pts[:1]]), axis=0)
    ang = np.arctan2(seg[:, 1], seg[:, 0])
    d = np.diff(np.concatenate([ang, ang[:1]]))
    return float(np.abs((d + np.pi) % (2 * np.pi) - np.pi).mean())


def instance_descriptors(feats: torch.Tensor, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and shapes of every instance.

    feats ``(C, h, w)`` patch features; ids ``(H, W)`` int instance ids 1..N at the network
    size. Returns ``(N, C) float32`` L2-normalised mean features over each instance's
    pixels (patch grid upsampled nearest) and ``(N, 4) float32`` shapes."""
    n = int(ids.max()) if ids.size else 0
    c, h, w = feats.shape
    if n == 0:
        return np.zeros((0, c), np.float32), np.zeros((0, 4), np.float32)
    rows = np.arange(ids.shape[0]) * h // ids.shape[0]
    cols = np.arange(ids.shape[1]) * w // ids.shape[1]
    cell = (rows[:, None] * w + cols[None, :]).ravel()
    owner = ids.ravel().astype(np.int64)
    weight = np.bincount(owner * (h * w) + cell, minlength=(n + 1) * h * w).reshape(
        n + 1, h * w).astype(np.float32)  # pixels of instance i in each cell
    flat = feats.reshape(c, h * w).T.cpu().numpy()
    pooled = weight[1:] @ flat / np.maximum(weight[1:].sum(1, keepdims=True), 1.0)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    shapes = np.zeros((n, 4), np.float32)
    for i, box in enumerate(ndimage.find_objects(ids.astype(np.int32), max_label=n), 1):
        if box is not None:
            shapes[i - 1] = shape_features(ids[box] == i)
    return pooled.astype(np.float32), shapes


def combine(pooled: np.ndarray, shapes: np.ndarray, mean: np.ndarray, std: np.ndarray,
            shape_weight: float) -> np.ndarray:
    """``(N, C + 4) float32``: pooled features beside the standardised shapes x weight."""
    z = (shapes - mean) / np.maximum(std, 1e-6)
    return np.concatenate([pooled, shape_weight * z / 2.0], axis=1).astype(np.float32)
