"""Calibration: PASTA Phases 1 and 2, plus the weight-free segmenter's statistics.

Passes over the data (every one streamed; peak memory independent of the image count):
1. baseline -> backbone -> L2-normalised patch rows -> on-disk float16 cache;
2. MiniBatch K-Means on the cache; baseline cluster maps and P_baseline;
3. reference (and optional empty set) -> cluster maps, P_reference (P_empty);
4. anomaly clusters (R_k < threshold) and background clusters (empty set or border prior);
5. images again (decode + resize only) -> pixel colour model for the segmenter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from pasta_ros.config import PastaConfig
from pasta_ros.core import anomaly_analysis as aa
from pasta_ros.core.clustering import (FeatureCache, assign_clusters, cluster_counts, fit_kmeans,
                                       grid_to_rows)
from pasta_ros.core.errors import CalibrationError
from pasta_ros.core.features import FeatureExtractor, ImageSource, prepared_images
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.segmenters.color_model import ColorModelBuilder

log = logging.getLogger(__name__)


@dataclass
class SetMaps:
    """Cluster maps of one image set: names, ``(h, w) int16`` maps, ``(K,)`` counts."""

    names: list[str] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    counts: np.ndarray | None = None

    def add(self, names: list[str], ids: torch.Tensor) -> None:
        self.names.extend(names)
        self.maps.extend(m for m in ids.cpu().numpy().astype(np.int16))


def _progress(iterable, desc: str, quiet: bool):
    return tqdm(iterable, desc=desc, unit="batch", disable=quiet, leave=False)


def cache_baseline(extractor: FeatureExtractor, source: ImageSource, cache: FeatureCache,
                   batch_size: int, quiet: bool) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Pass 1: baseline features into ``cache``; returns names and ``(n_images, h, w)`` runs."""
    names: list[str] = []
    shapes: list[tuple[int, int, int]] = []
    for batch_names, _, feats in _progress(extractor.batches(source(), batch_size),
                                           "baseline features", quiet):
        names.extend(batch_names)
        cache.append(grid_to_rows(feats))
        shapes.append((feats.shape[0], feats.shape[2], feats.shape[3]))
    if not names:
        raise CalibrationError("the baseline set is empty: no readable images were found")
    return names, shapes


def maps_from_cache(rows: np.ndarray, shapes: list[tuple[int, int, int]], names: list[str],
                    centers: torch.Tensor, k: int) -> SetMaps:
    """Pass 2: assign the cached baseline rows, batch by batch."""
    out = SetMaps(counts=np.zeros(k, np.int64))
    start, name_i = 0, 0
    for b, h, w in shapes:
        n = b * h * w
        chunk = torch.from_numpy(np.asarray(rows[start:start + n], np.float32))
        ids = assign_clusters(chunk.to(centers.device), centers).view(b, h, w)
        out.add(names[name_i:name_i + b], ids)
        out.counts += cluster_counts(ids, k)
        start, name_i = start + n, name_i + b
    return out


def project_set(extractor: FeatureExtractor, source: ImageSource, centers: torch.Tensor,
                batch_size: int, desc: str, quiet: bool) -> SetMaps:
    """Pass 3: cluster maps and counts of a set under the frozen K-Means."""
    k = centers.shape[0]
    out = SetMaps(counts=np.zeros(k, np.int64))
    for names, _, feats in _progress(extractor.batches(source(), batch_size), desc, quiet):
        ids = assign_clusters(feats, centers)
        out.add(names, ids)
        out.counts += cluster_counts(ids, k)
    if not out.names:
        raise CalibrationError(f"the {desc.split()[0]} set is empty: no readable images")
    return out


def background_clusters(base: SetMaps, empty: SetMaps | None, p_base: np.ndarray,
                        cfg: PastaConfig) -> tuple[np.ndarray, str, np.ndarray | None]:
    """Phase 2b: ``(K,) bool`` background clusters, their source, and P_empty if any."""
    if empty is not None:
        p_empty = aa.distribution(empty.counts)
        return aa.background_from_empty(p_empty, p_base, cfg.background_ratio), "empty", p_empty
    k = cfg.clusters
    border = np.zeros(k, np.int64)
    inner = np.zeros(k, np.int64)
    for m in base.maps:
        b, i = aa.border_interior_counts(m.astype(np.int64), k)
        border += b
        inner += i
    return aa.background_from_border(border, inner), "border", None


def color_model(extractor: FeatureExtractor, sets: list[tuple[ImageSource, SetMaps | None]],
                background: np.ndarray, quiet: bool) -> np.ndarray:
    """Pass 5: the pixel colour log-odds table from all sets (None maps = empty scenes)."""
    builder = ColorModelBuilder()
    for source, maps in sets:
        lookup = dict(zip(maps.names, maps.maps)) if maps is not None else {}
        for name, img in tqdm(prepared_images(extractor, source), desc="colour model",
                              unit="img", disable=quiet, leave=False):
            if maps is None:
                builder.add(img, None)
            elif name in lookup:  # images unreadable in the feature pass are skipped here too
                builder.add(img, ~background[lookup[name]])
    return builder.log_odds()


def calibrate(extractor: FeatureExtractor, baseline: ImageSource, reference: ImageSource,
              empty: ImageSource | None, cfg: PastaConfig, *, weights_hash: str = "",
              quiet: bool = False) -> CalibratedModel:
    """Run Phases 1-2 (and segmenter statistics); returns an unsaved CalibratedModel."""
    k = cfg.clusters
    with FeatureCache(extractor.info.channels) as cache:
        names, shapes = cache_baseline(extractor, baseline, cache, cfg.batch_size, quiet)
        rows = cache.array()
        log.info("K-Means: %d patches from %d baseline images, K=%d", rows.shape[0],
                 len(names), k)
        centers_np = fit_kmeans(rows, k, seed=cfg.seed, epochs=cfg.kmeans_epochs)
        centers = torch.from_numpy(centers_np).to(extractor.device)
        base = maps_from_cache(rows, shapes, names, centers, k)
        del rows
    ref = project_set(extractor, reference, centers, cfg.batch_size, "reference features", quiet)
    emp = (project_set(extractor, empty, centers, cfg.batch_size, "empty features", quiet)
           if empty is not None else None)
    p_base, p_ref = aa.distribution(base.counts), aa.distribution(ref.counts)
    anomaly = aa.anomaly_clusters(p_ref, p_base, cfg.ratio_threshold)
    background, bg_source, p_empty = background_clusters(base, emp, p_base, cfg)
    anomaly &= ~background  # a cluster of empty belt is never an anomaly
    sets = [(baseline, base), (reference, ref)] + ([(empty, None)] if empty else [])
    log_odds = color_model(extractor, sets, background, quiet)
    stats = {"baseline_images": len(base.names), "reference_images": len(ref.names),
             "empty_images": len(emp.names) if emp else 0,
             "baseline_patches": int(base.counts.sum()),
             "reference_patches": int(ref.counts.sum())}
    if not anomaly.any():
        log.warning("no cluster has P_ref/P_base < %.3g: the model will report no anomalies",
                    cfg.ratio_threshold)
    return CalibratedModel(
        backbone=cfg.backbone, weights_hash=weights_hash,
        input_size=(cfg.input_width, cfg.input_height), stride=extractor.info.stride,
        centers=centers_np, p_baseline=p_base, p_reference=p_ref, anomaly=anomaly,
        background=background, color_log_odds=log_odds, ratio_threshold=cfg.ratio_threshold,
        vote_threshold=cfg.vote_threshold, seed=cfg.seed, background_source=bg_source,
        p_empty=p_empty, stats=stats).finalize()
