"""Phase 1: MiniBatch K-Means on streamed patch features, and fast nearest-centroid assignment.

Baseline features are streamed to an on-disk float16 cache (:class:`FeatureCache`) so the
peak memory of calibration does not grow with the number of images; K-Means then runs
``epochs`` block-shuffled passes of ``partial_fit`` over that cache (:class:`RowBlocks`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from threadpoolctl import threadpool_limits

from pasta_ros.core import cpu_kernels
from pasta_ros.core.errors import CalibrationError


def grid_to_rows(grid: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` feature grid -> ``(B*h*w, C)`` rows, L2-normalised per row."""
    rows = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])
    return torch.nn.functional.normalize(rows.float(), dim=1)


CACHE_PREFIX = "pasta_features_"


class FeatureCache:
    """Append-only ``(N, C)`` rows in a temporary file: ``float16`` features by default, or
    another ``dtype`` (calibration keeps ``uint16`` colour bins per pixel in one).

    Rows are read back in explicit blocks (``os.pread``) into ordinary arrays rather than
    through a memmap: mapped file pages count towards the process RSS, so a memmap over a
    multi-GB cache would make the peak grow with the number of images.
    """

    def __init__(self, channels: int, directory: str | Path | None = None, *,
                 dtype: np.dtype | type = np.float16) -> None:
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        # the pid in the name lets ModelStore.clean_stale tell a crashed run's file from a live one
        fd, name = tempfile.mkstemp(prefix=f"{CACHE_PREFIX}{os.getpid()}_", suffix=".f16",
                                    dir=directory)
        self._file = os.fdopen(fd, "w+b")
        self.path = Path(name)
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.rows = 0

    def append(self, rows: torch.Tensor | np.ndarray) -> None:
        """Append ``(n, C)`` rows (any dtype; stored as the cache's)."""
        arr = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else rows
        if arr.ndim != 2 or arr.shape[1] != self.channels:
            raise ValueError(f"expected (n, {self.channels}) rows, got {arr.shape}")
        self._file.write(np.ascontiguousarray(arr, dtype=self.dtype).tobytes())
        self.rows += arr.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a fresh ``(n, C)`` array: float32 for a float cache, the
        stored dtype otherwise."""
        self._file.flush()
        stop = min(stop, self.rows)
        row_bytes = self.dtype.itemsize * self.channels
        buf = bytearray(max(stop - start, 0) * row_bytes)  # writable: no copy for torch
        got = os.preadv(self._file.fileno(), [buf], start * row_bytes) if buf else 0
        rows = np.frombuffer(buf, self.dtype, count=got // self.dtype.itemsize)
        rows = rows.reshape(-1, self.channels)
        if self.dtype == np.float16:  # torch's float16 -> float32 is ~2.7x numpy's, same values
            return torch.from_numpy(rows).float().numpy()
        return rows.astype(np.float32) if self.dtype.kind == "f" else rows

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RowBlocks:
    """The rows of a FeatureCache (or an in-memory array), optionally only those where
    ``keep`` (``(N,) bool``) is set, read in contiguous blocks of ``block`` rows."""

    def __init__(self, rows: FeatureCache | np.ndarray, keep: np.ndarray | None = None,
                 block: int = 8192) -> None:
        self.rows, self.keep, self.block = rows, keep, block
        total = rows.rows if isinstance(rows, FeatureCache) else rows.shape[0]
        self.total = total
        self.n = int(keep.sum()) if keep is not None else total

    def _read(self, start: int) -> np.ndarray:
        stop = start + self.block
        arr = (self.rows.read(start, stop) if isinstance(self.rows, FeatureCache)
               else np.asarray(self.rows[start:stop], np.float32))
        return arr if self.keep is None else arr[self.keep[start:stop]]

    def blocks(self, rng: np.random.Generator | None = None):
        """Yield ``(m, C) float32`` blocks, in file order or (with ``rng``) shuffled order."""
        starts = np.arange(0, self.total, self.block)
        if rng is not None:
            rng.shuffle(starts)
        for start in starts:
            arr = self._read(int(start))
            if arr.shape[0]:
                yield arr


def _sample_rows(rows: RowBlocks, size: int, rng: np.random.Generator) -> np.ndarray:
    """About ``size`` uniformly sampled rows, in one streamed pass."""
    p = min(1.0, size / max(rows.n, 1))
    picked = [b[rng.random(b.shape[0]) < p] for b in rows.blocks()]
    return np.concatenate(picked) if picked else np.zeros((0, 0), np.float32)


# Rows MiniBatch K-Means sees in all (epochs x rows) before epochs are dropped: 6M is 3
# epochs of ~270 baseline images at 910x512 (stride 8); 1,000 images get one epoch of 7.3M.
ROW_BUDGET = 6_000_000


def kmeans_epochs(n: int, epochs: int, row_budget: int = ROW_BUDGET) -> int:
    """Epochs to run over ``n`` rows: ``epochs``, fewer when ``epochs * n`` exceeds
    ``row_budget`` (never below one; ``row_budget`` 0 = no cap). A large baseline already
    gives MiniBatch K-Means enough updates in fewer passes."""
    if row_budget <= 0:
        return epochs
    return max(1, min(epochs, row_budget // max(n, 1)))


def fit_kmeans(features: np.ndarray | RowBlocks, k: int, *, seed: int = 0, epochs: int = 3,
               chunk: int = 8192, init_sample: int = 50_000, mix_blocks: int = 8,
               row_budget: int = ROW_BUDGET) -> np.ndarray:
    """MiniBatch K-Means over ``(N, C)`` rows; returns ``(K, C) float32``.

    ``features`` is an array or a :class:`RowBlocks` over an on-disk cache. k-means++ seeds
    the centres on a streamed random sample of about ``init_sample`` rows; then ``epochs``
    passes of ``partial_fit``: blocks are read in random order, ``mix_blocks`` of them are
    pooled and shuffled, and fed in chunks of ``chunk`` rows; fewer epochs when N is large
    (:func:`kmeans_epochs`, ``row_budget``). Memory stays O(mix_blocks * block +
    init_sample) rows whatever N is. scikit-learn runs on ``KMEANS_THREADS`` threads.
    """
    with sklearn_threads():
        return _fit_kmeans(features, k, seed, epochs, chunk, init_sample, mix_blocks,
                           row_budget)


# scikit-learn's OpenMP / BLAS threads for K-Means: its mini-batch step is ~6 ms on one thread
# and 13x that with two threads when another process holds one of the two cores (a node
# running beside a recalibration, or any other job); one thread also keeps K-Means off the
# cores the node's inference uses (BENCHMARKS.md, issue #12 session 5)
KMEANS_THREADS = 1


def sklearn_threads() -> threadpool_limits:
    """Context manager: scikit-learn's (OpenMP, BLAS) thread pools at ``KMEANS_THREADS``."""
    return threadpool_limits(limits=KMEANS_THREADS)


def _fit_kmeans(features: np.ndarray | RowBlocks, k: int, seed: int, epochs: int, chunk: int,
                init_sample: int, mix_blocks: int, row_budget: int) -> np.ndarray:
    rows = features if isinstance(features, RowBlocks) else RowBlocks(features, block=chunk)
    n = rows.n
    if n < k:
        raise CalibrationError(f"only {n} patches for K={k} clusters: use fewer clusters "
                               f"(--clusters) or more/larger baseline images")
    rng = np.random.default_rng(seed)
    sample = _sample_rows(rows, init_sample, rng)
    if sample.shape[0] < k or np.unique(sample, axis=0).shape[0] < k:
        raise CalibrationError(f"the baseline has fewer than K={k} distinct patch features; "
                               f"use fewer clusters or more varied images")
    # float64: sklearn's float32 distance path upcasts in small chunks and is ~9x slower
    centers, _ = kmeans_plusplus(sample.astype(np.float64), k, random_state=seed)
    centers = centers.astype(np.float32)
    del sample
    km = MiniBatchKMeans(n_clusters=k, init=centers, n_init=1, batch_size=min(chunk, n),
                         random_state=seed, reassignment_ratio=0.01)
    for _ in range(kmeans_epochs(n, epochs, row_budget)):
        pool: list[np.ndarray] = []
        for block in rows.blocks(rng):
            pool.append(block)
            if len(pool) == mix_blocks:
                _partial_fit_pool(km, pool, chunk, rng)
                pool = []
        if pool:
            _partial_fit_pool(km, pool, chunk, rng)
    return km.cluster_centers_.astype(np.float32)


def _partial_fit_pool(km: MiniBatchKMeans, pool: list[np.ndarray], chunk: int,
                      rng: np.random.Generator) -> None:
    data = np.concatenate(pool)
    data = data[rng.permutation(data.shape[0])]
    for start in range(0, data.shape[0], chunk):
        km.partial_fit(data[start:start + chunk])


def assign_clusters(features: torch.Tensor, centers: torch.Tensor, *,
                    compiled: bool | None = None) -> torch.Tensor:
    """Nearest centre per patch.

    features: ``(B, C, h, w)`` grid or ``(N, C)`` rows, float; rows are L2-normalised here
    exactly as in calibration. centers: ``(K, C) float32`` on the same device.
    Returns ``(B, h, w)`` or ``(N,)`` int64 cluster ids. A grid on the CPU goes through the
    compiled kernel of :mod:`cpu_kernels` when numba imports (``compiled=None``); the torch
    ops (``compiled=False``, and always on a GPU) give the same ids up to float rounding.
    """
    c_sq = centers.pow(2).sum(1)
    if features.dim() == 4:
        # Work on the (B, C, h*w) view: no permute copy of the grid.
        # Normalisation folded into the scores: ||c||^2 - 2 (c.x) / ||x||, one pass fewer.
        b, c, h, w = features.shape
        x = features.reshape(b, c, h * w).float()
        if compiled is None:
            compiled = cpu_kernels.AVAILABLE
        if compiled and not x.is_cuda:
            products = torch.matmul(centers, x)
            ids = [cpu_kernels.nearest_center(x[i].contiguous().numpy(), products[i].numpy(),
                                              c_sq.numpy()) for i in range(b)]
            return torch.from_numpy(np.stack(ids)).view(b, h, w)
        inv_norm = x.square().sum(1, keepdim=True).clamp_min_(1e-24).rsqrt_()
        scores = torch.addcmul(c_sq.view(1, -1, 1), torch.matmul(centers, x), inv_norm,
                               value=-2.0)
        # min(dim).indices, not argmin: same first-minimum rule, several times faster on
        # the CPU for a reduction over the strided K axis.
        return scores.min(dim=1).indices.view(b, h, w)
    x = torch.nn.functional.normalize(features.float(), dim=1)
    # argmin ||x - c||^2 = argmin (||c||^2 - 2 x.c): one matmul, no (N, K, C) tensor.
    scores = c_sq.unsqueeze(0) - 2.0 * (x @ centers.T)
    return scores.min(dim=1).indices


def cluster_counts(cluster_ids: torch.Tensor, k: int) -> np.ndarray:
    """Histogram of cluster ids (any shape, int64) -> ``(K,) int64`` counts."""
    return torch.bincount(cluster_ids.reshape(-1), minlength=k).cpu().numpy().astype(np.int64)
