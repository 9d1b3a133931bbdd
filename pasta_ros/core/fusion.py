"""Phase 3: mask-feature fusion (PASTA §III-C.3) and instance outputs, vectorised in torch.

Every instance votes with the patches under it: its anomaly share is the area-weighted
fraction of its pixels whose patch lies in an anomaly cluster; share > v -> anomaly (2),
else target (1). All instances are handled together with ``bincount``/``scatter_reduce``
on one ``(H, W)`` instance-id image, two histogram passes: no per-pixel or per-mask
Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pasta_ros.core import cpu_kernels

BACKGROUND, TARGET, ANOMALY = 0, 1, 2


@dataclass(frozen=True)
class Instance:
    """One segmented object, in output-image pixels.

    bbox: (x, y, width, height); centroid: (x, y) float; mask: ``(height, width) bool``
    crop of the instance inside its bbox; anomaly_share in [0, 1]; label 1 target, 2 anomaly.
    """

    id: int
    label: int
    anomaly_share: float
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]
    mask: np.ndarray

    def to_json(self) -> dict:
        return {"id": self.id, "class": "anomaly" if self.label == ANOMALY else "target",
                "label": self.label, "anomaly_share": round(self.anomaly_share, 4),
                "bbox": list(self.bbox), "area": self.area,
                "centroid": [round(self.centroid[0], 2), round(self.centroid[1], 2)]}


@dataclass(frozen=True)
class FusionResult:
    """labels: ``(H, W) uint8`` {0,1,2}; instances: the objects, ids 1..N."""

    labels: np.ndarray
    instances: list[Instance]


def upsample_nearest(patch_map: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(h, w)`` map -> ``(height, width)`` by nearest index arithmetic (Evaluation A)."""
    h, w = patch_map.shape
    dev = patch_map.device
    rows = torch.arange(height, device=dev) * h // height
    cols = torch.arange(width, device=dev) * w // width
    return patch_map[rows[:, None], cols[None, :]]


def _upsample_np(patch_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """numpy twin of :func:`upsample_nearest` (same index rule, via cv2 for speed)."""
    up = cv2.resize(patch_map.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    h, w = patch_map.shape
    if height % h or width % w:  # cv2's nearest rounds differently off integer factors
        rows = np.arange(height) * h // height
        cols = np.arange(width) * w // width
        up = patch_map[rows[:, None], cols[None, :]].astype(np.uint8)
    return up


def instance_histograms(ids, anomaly_px, n: int):
    """Two histograms that hold every per-instance statistic, from two passes over pixels.

    ids ``(H, W)`` int64 (numpy or torch), anomaly_px ``(H, W)`` {0,1} of the same kind.
    Returns rows ``(n+1, 2, H)`` (pixels of instance i, non-anomalous/anomalous, per row)
    and cols ``(n+1, W)`` (pixels of instance i per column); index 0 (no instance) is zero.
    On CUDA tensors this runs on the GPU; on the CPU the numpy path is used, over the object
    pixels only (torch's CPU bincount is several times slower than numpy's here).
    """
    height, width = ids.shape
    if isinstance(ids, torch.Tensor):
        ys = torch.arange(height, device=ids.device).view(-1, 1)
        xs = torch.arange(width, device=ids.device).view(1, -1)
        row_key = ((ids * 2 + anomaly_px.long()) * height + ys).reshape(-1)
        col_key = (ids * width + xs).reshape(-1)
        rows = torch.bincount(row_key, minlength=(n + 1) * 2 * height)
        cols = torch.bincount(col_key, minlength=(n + 1) * width)
        rows = rows.view(n + 1, 2, height).cpu().numpy()
        cols = cols.view(n + 1, width).cpu().numpy()
        rows[0], cols[0] = 0, 0  # id 0 is 'no instance': no statistics, as on the CPU path
        return rows, cols
    # Only object pixels carry statistics: gather them once (typically 10-20% of a frame).
    idx = np.flatnonzero(ids)
    owner = ids.ravel()[idx].astype(np.intp)
    ys, xs = np.divmod(idx, width)
    anomalous = anomaly_px.ravel()[idx].astype(bool)
    row_key = owner * height + ys
    per_row = np.bincount(row_key, minlength=(n + 1) * height).reshape(n + 1, height)
    anom_row = np.bincount(row_key[anomalous], minlength=(n + 1) * height).reshape(n + 1, height)
    cols = np.bincount(owner * width + xs, minlength=(n + 1) * width).reshape(n + 1, width)
    return np.stack([per_row - anom_row, anom_row], axis=1), cols


def summarize(rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """Per-instance stats from the histograms (small arrays, vectorised over instances):
    areas ``(n+1,)``, shares ``(n+1,)`` anomaly share, boxes ``(n+1, 4)`` (x0, y0, x1, y1
    inclusive; -1 for absent ids) and centroids ``(n+1, 2)`` (x, y)."""
    per_row = rows.sum(1)
    areas = per_row.sum(1)
    safe = np.maximum(areas, 1)
    shares = rows[:, 1].sum(1) / safe
    occupied_r, occupied_c = per_row > 0, cols > 0
    h, w = per_row.shape[1], cols.shape[1]
    y0 = np.where(areas > 0, occupied_r.argmax(1), -1)
    y1 = np.where(areas > 0, h - 1 - occupied_r[:, ::-1].argmax(1), -1)
    x0 = np.where(areas > 0, occupied_c.argmax(1), -1)
    x1 = np.where(areas > 0, w - 1 - occupied_c[:, ::-1].argmax(1), -1)
    cy = per_row @ np.arange(h, dtype=np.float64) / safe
    cx = cols @ np.arange(w, dtype=np.float64) / safe
    return {"areas": areas, "shares": shares, "boxes": np.stack([x0, y0, x1, y1], 1),
            "centroids": np.stack([cx, cy], 1)}


def fuse(instance_ids: np.ndarray | torch.Tensor, anomaly_patches: np.ndarray | torch.Tensor,
         vote_threshold: float = 0.1, *, with_instances: bool = True,
         compiled: bool | None = None, torch_path: bool = False) -> FusionResult:
    """Classify every instance and paint the 3-class label image.

    instance_ids: ``(H, W)`` int, 0 = background, 1..N instances (disjoint).
    anomaly_patches: ``(h, w) bool`` patch map (cluster in an anomaly cluster). When it is a
    CUDA tensor the pixel passes run on the GPU; otherwise on the CPU, with the compiled
    kernels of :mod:`cpu_kernels` (``compiled=None``: when numba imports) or numpy
    (``compiled=False``); both give the same result. ``torch_path`` forces the GPU's torch
    histogram path on any device (so the CPU tests run it).
    Returns labels ``(H, W) uint8`` {0 background, 1 target, 2 anomaly} and the instances.
    """
    on_gpu = isinstance(anomaly_patches, torch.Tensor) and anomaly_patches.is_cuda
    compiled = cpu_kernels.AVAILABLE if compiled is None else compiled
    if on_gpu or torch_path:
        anomaly_patches = torch.as_tensor(anomaly_patches)
        ids = torch.as_tensor(instance_ids, device=anomaly_patches.device).long()
        n = int(ids.max()) if ids.numel() else 0
        st = summarize(*instance_histograms(ids, upsample_nearest(anomaly_patches, *ids.shape),
                                            n))
    else:
        ids = (instance_ids.cpu().numpy() if isinstance(instance_ids, torch.Tensor)
               else np.asarray(instance_ids))
        patches = (anomaly_patches.cpu().numpy() if isinstance(anomaly_patches, torch.Tensor)
                   else np.asarray(anomaly_patches))
        n = int(ids.max()) if ids.size else 0
        st = _cpu_stats(ids, patches, n, compiled)
    cls = np.where(st["shares"] > vote_threshold, ANOMALY, TARGET).astype(np.uint8)
    cls[0] = BACKGROUND
    cls[st["areas"] == 0] = BACKGROUND
    labels = _paint(ids, cls, st["boxes"], compiled)
    if not with_instances or n == 0:
        return FusionResult(labels, [])
    ids_cpu = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else ids
    return FusionResult(labels, _instances(ids_cpu, cls, st))


def _cpu_stats(ids: np.ndarray, patches: np.ndarray, n: int,
               compiled: bool) -> dict[str, np.ndarray]:
    """Per-instance stats on the CPU: one compiled pass, or the numpy histogram path."""
    height, width = ids.shape
    if not compiled:
        ids = ids.astype(np.intp, copy=False)
        return summarize(*instance_histograms(ids, _upsample_np(patches, height, width), n))
    h, w = patches.shape
    rows = np.arange(height, dtype=np.intp) * h // height
    cols = np.arange(width, dtype=np.intp) * w // width
    s = cpu_kernels.instance_stats(np.ascontiguousarray(ids),
                                   np.ascontiguousarray(patches, dtype=np.uint8), rows, cols, n)
    areas = s[:, 0]
    safe = np.maximum(areas, 1)
    present = areas > 0
    boxes = np.where(present[:, None], s[:, 2:6], -1)
    centroids = np.stack([s[:, 6] / safe, s[:, 7] / safe], 1)
    shares = s[:, 1] / safe  # row 0 ('no instance') is all zero: the kernel skips id 0
    return {"areas": areas, "shares": shares, "boxes": boxes, "centroids": centroids}


def _paint(ids, cls: np.ndarray, boxes: np.ndarray, compiled: bool) -> np.ndarray:
    """``(H, W)`` ids -> ``(H, W) uint8`` class labels through the per-instance table.

    boxes: ``(n+1, 4)`` (x0, y0, x1, y1), -1 for absent ids, as from :func:`summarize`.
    """
    if isinstance(ids, torch.Tensor):
        return torch.from_numpy(cls).to(ids.device)[ids].cpu().numpy()
    if compiled:
        return cpu_kernels.paint_boxes(np.ascontiguousarray(ids), cls,
                                       np.ascontiguousarray(boxes, dtype=np.int64))
    if cls.shape[0] <= 256:  # cv2.LUT on uint8 ids is several times faster than fancy indexing
        table = np.zeros(256, np.uint8)
        table[:cls.shape[0]] = cls
        return cv2.LUT(ids.astype(np.uint8), table)
    return cls[ids]


def _instances(ids: np.ndarray, cls: np.ndarray, st: dict[str, np.ndarray]) -> list[Instance]:
    """Package per-instance stats as Instances (one crop slice each; ids renumbered 1..M)."""
    present = np.flatnonzero(st["areas"][1:] > 0) + 1
    rows = zip(present.tolist(), st["boxes"][present].tolist(), st["centroids"][present].tolist(),
               cls[present].tolist(), st["shares"][present].tolist(),
               st["areas"][present].tolist())
    return [Instance(id=n, label=label, anomaly_share=share,
                     bbox=(x0, y0, x1 - x0 + 1, y1 - y0 + 1), area=area, centroid=(cx, cy),
                     mask=ids[y0:y1 + 1, x0:x1 + 1] == i)
            for n, (i, (x0, y0, x1, y1), (cx, cy), label, share, area) in enumerate(rows, 1)]
