"""Phase 1: MiniBatch K-Means on streamed patch features, and fast nearest-centroid assignment.

Baseline features are streamed to an on-disk float16 cache (:class:`FeatureCache`) so the
peak memory of calibration does not grow with the number of images; K-Means then runs
``epochs`` shuffled passes of ``partial_fit`` over that cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus

from pasta_ros.core.errors import CalibrationError


def grid_to_rows(grid: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` feature grid -> ``(B*h*w, C)`` rows, L2-normalised per row."""
    rows = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])
    return torch.nn.functional.normalize(rows.float(), dim=1)


class FeatureCache:
    """Append-only ``(N, C) float16`` feature rows in a temporary file, read back as a memmap."""

    def __init__(self, channels: int, directory: str | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="pasta_features_", suffix=".f16", dir=directory)
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.channels = channels
        self.rows = 0

    def append(self, rows: torch.Tensor | np.ndarray) -> None:
        """Append ``(n, C)`` rows (any float dtype)."""
        arr = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else rows
        if arr.ndim != 2 or arr.shape[1] != self.channels:
            raise ValueError(f"expected (n, {self.channels}) rows, got {arr.shape}")
        self._file.write(np.ascontiguousarray(arr, dtype=np.float16).tobytes())
        self.rows += arr.shape[0]

    def array(self) -> np.ndarray:
        """The cached rows as a read-only ``(N, C) float16`` memmap."""
        self._file.flush()
        if self.rows == 0:
            return np.zeros((0, self.channels), np.float16)
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=(self.rows, self.channels))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fit_kmeans(features: np.ndarray, k: int, *, seed: int = 0, epochs: int = 3,
               chunk: int = 8192, init_sample: int = 50_000) -> np.ndarray:
    """MiniBatch K-Means over ``(N, C)`` rows (may be a memmap); returns ``(K, C) float32``.

    k-means++ seeds the centres on a random sample of at most ``init_sample`` rows, then
    ``epochs`` shuffled passes of ``partial_fit`` in chunks of ``chunk`` rows refine them.
    Memory stays O(chunk + init_sample) rows whatever N is.
    """
    n = features.shape[0]
    if n < k:
        raise CalibrationError(f"only {n} patches for K={k} clusters: use fewer clusters "
                               f"(--clusters) or more/larger baseline images")
    rng = np.random.default_rng(seed)
    sample_idx = np.sort(rng.choice(n, size=min(n, init_sample), replace=False))
    sample = np.asarray(features[sample_idx], dtype=np.float32)
    if np.unique(sample, axis=0).shape[0] < k:
        raise CalibrationError(f"the baseline has fewer than K={k} distinct patch features; "
                               f"use fewer clusters or more varied images")
    centers, _ = kmeans_plusplus(sample, k, random_state=seed)
    km = MiniBatchKMeans(n_clusters=k, init=centers, n_init=1, batch_size=min(chunk, n),
                         random_state=seed, reassignment_ratio=0.01)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, chunk):
            idx = np.sort(order[start:start + chunk])
            km.partial_fit(np.asarray(features[idx], dtype=np.float32))
    return km.cluster_centers_.astype(np.float32)


def assign_clusters(features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Nearest centre per patch.

    features: ``(B, C, h, w)`` grid or ``(N, C)`` rows, float; rows are L2-normalised here
    exactly as in calibration. centers: ``(K, C) float32`` on the same device.
    Returns ``(B, h, w)`` or ``(N,)`` int64 cluster ids.
    """
    c_sq = centers.pow(2).sum(1)
    if features.dim() == 4:
        # Work on the (B, C, h*w) view: no permute copy of the grid.
        b, c, h, w = features.shape
        x = features.reshape(b, c, h * w).float()
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scores = c_sq.view(1, -1, 1) - 2.0 * torch.matmul(centers, x)
        return scores.argmin(dim=1).view(b, h, w)
    x = torch.nn.functional.normalize(features.float(), dim=1)
    # argmin ||x - c||^2 = argmin (||c||^2 - 2 x.c): one matmul, no (N, K, C) tensor.
    scores = c_sq.unsqueeze(0) - 2.0 * (x @ centers.T)
    return scores.argmin(dim=1)


def cluster_counts(cluster_ids: torch.Tensor, k: int) -> np.ndarray:
    """Histogram of cluster ids (any shape, int64) -> ``(K,) int64`` counts."""
    return torch.bincount(cluster_ids.reshape(-1), minlength=k).cpu().numpy().astype(np.int64)
