"""Calibration: PASTA Phases 1 and 2, plus the weight-free segmenter's statistics.

Passes over the data (every one streamed; peak memory independent of the image count):
1. baseline, reference (and optional empty) sets -> backbone -> L2-normalised patch rows ->
   on-disk float16 caches (the backbone runs once per image);
2. scene-level MiniBatch K-Means (K) on the baseline cache; background clusters from the
   empty set (P_empty/P_base) or the border prior;
3. with ``object_codebook``: a second K-Means (K) on the non-background baseline patches;
   centres = background centres + object centres; with ``split_clusters``, object clusters
   with a ``split_parts``-means part absent from the reference set are split
   (:func:`split_mixed_clusters`);
4. cluster maps of all sets; P_baseline, P_reference; anomaly clusters where R_k < threshold;
5. the colour bins kept in pass 1 (no second decode) -> background colour model for the
   segmenter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.cluster import KMeans
from tqdm import tqdm

from pasta_ros.core import anomaly_analysis as aa
from pasta_ros.core import distractor_bank as db
from pasta_ros.core.clustering import (
    FeatureCache,
    RowBlocks,
    assign_clusters,
    cluster_counts,
    fit_kmeans,
    grid_to_rows,
    sklearn_threads,
)
from pasta_ros.core.errors import CalibrationError
from pasta_ros.core.features import FeatureExtractor, ImageSource
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.segmenters.color_model import ColorModelBuilder, color_index
from pasta_ros.core.self_checks import calibration_checks

# progress(phase, images_done): see calibrate
Progress = Callable[[str, int], None]

if TYPE_CHECKING:  # annotations only: the config schema imports the method registry
    from pasta_ros.core.config import PastaConfig

log = logging.getLogger(__name__)


@dataclass
class SetMaps:
    """Cluster maps of one image set: names, ``(h, w) int16`` maps, ``(K,)`` counts."""

    names: list[str] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    counts: np.ndarray | None = None

    def add(self, names: list[str], block: np.ndarray) -> None:
        """Append the ``(b, h, w) int16`` maps of ``names`` (kept as views of ``block``)."""
        self.names.extend(names)
        self.maps.extend(block)


def _progress(iterable, desc: str, quiet: bool):
    return tqdm(iterable, desc=desc, unit="batch", disable=quiet, leave=False)


class CachedSet:
    """One image set's features on disk: names, ``(n_images, h, w)`` batch runs, rows; and
    each image's ``(H, W)`` colour bins (``uint16``, one row per pixel) for the colour
    model, so that pass does not decode and resize every image a second time."""

    def __init__(self, channels: int, directory: str | Path | None = None) -> None:
        self.cache = FeatureCache(channels, directory)
        self.colors = FeatureCache(1, directory, dtype=np.uint16)
        self.names: list[str] = []
        self.shapes: list[tuple[int, int, int]] = []
        self.image_sizes: list[tuple[int, int]] = []  # (H, W) of each prepared image

    def fill(self, extractor: FeatureExtractor, source: ImageSource, batch_size: int,
             label: str, quiet: bool, on_batch: Callable[[int], None] | None = None
             ) -> CachedSet:
        """Run the backbone over the set once; raise CalibrationError when it is empty.
        ``on_batch(n)`` is called after each batch with the batch's image count."""
        for names, imgs, feats in _progress(extractor.batches(source(), batch_size),
                                         f"{label} features", quiet):
            if on_batch is not None:
                on_batch(len(names))
            self.names.extend(names)
            self.cache.append(grid_to_rows(feats))
            self.shapes.append((feats.shape[0], feats.shape[2], feats.shape[3]))
            for img in imgs:
                self.colors.append(color_index(img).reshape(-1, 1))
                self.image_sizes.append(img.shape[:2])
        if not self.names:
            raise CalibrationError(f"the {label} set is empty: no readable images were found")
        return self

    def maps(self, centers: torch.Tensor) -> SetMaps:
        """Cluster maps and counts of every cached image under ``centers``."""
        return maps_from_cache(self.cache, self.shapes, self.names, centers, centers.shape[0])

    def color_bins(self):
        """Yield each image's ``(H, W) uint16`` colour bins, in cache order."""
        start = 0
        for h, w in self.image_sizes:
            yield self.colors.read(start, start + h * w).reshape(h, w)
            start += h * w

    def close(self) -> None:
        self.cache.close()
        self.colors.close()


def assigned_batches(rows: FeatureCache, shapes: list[tuple[int, int, int]],
                     centers: torch.Tensor):
    """Yield ``(rows (n, C) float32, ids (b, h, w) int64)`` per cached batch under ``centers``."""
    start = 0
    for b, h, w in shapes:
        n = b * h * w
        chunk = rows.read(start, start + n)
        ids = assign_clusters(torch.from_numpy(chunk).to(centers.device), centers).view(b, h, w)
        yield chunk, ids
        start += n


def maps_from_cache(rows: FeatureCache, shapes: list[tuple[int, int, int]], names: list[str],
                    centers: torch.Tensor, k: int) -> SetMaps:
    """Assign cached rows batch by batch -> SetMaps.

    Every map lives in one ``(N,) int16`` block allocated up front: small long-lived arrays
    allocated between each batch's large temporaries fragmented glibc's heap, and the peak RSS
    grew with the number of images (5.5 GB at 1,000 images, BENCHMARKS.md)."""
    out = SetMaps(counts=np.zeros(k, np.int64))
    store = np.empty(rows.rows, np.int16)
    name_i = start = 0
    for (b, h, w), (_, ids) in zip(shapes, assigned_batches(rows, shapes, centers)):
        block = store[start:start + b * h * w].reshape(b, h, w)
        block[...] = ids.cpu().numpy()
        out.add(names[name_i:name_i + b], block)
        out.counts += cluster_counts(ids, k)
        name_i += b
        start += b * h * w
    return out


def background_clusters(base: SetMaps, empty: SetMaps | None, p_base: np.ndarray,
                        cfg: PastaConfig) -> tuple[np.ndarray, str, np.ndarray | None]:
    """Phase 2b: ``(K,) bool`` background clusters, their source, and P_empty if any."""
    if empty is not None:
        p_empty = aa.distribution(empty.counts)
        return aa.background_from_empty(p_empty, p_base, cfg.background_ratio), "empty", p_empty
    k = cfg.clusters
    depths = range(cfg.border_depth + 1)
    ring = np.zeros((len(depths), k), np.int64)
    inner = np.zeros((len(depths), k), np.int64)
    for m in base.maps:
        m = m.astype(np.int64)
        for d in depths:
            b, i = aa.ring_counts(m, k, d)
            ring[d] += b
            inner[d] += i
    background = aa.background_from_border(ring[0], inner[0])
    for d in depths[1:]:  # the rim's features carry the backbone's padding: rings further in
        if ring[d].any():
            background |= aa.background_from_border(ring[d], inner[d])
    return background, "border", None


def color_model(sets: list[tuple[CachedSet, SetMaps | None]], background: np.ndarray,
                ) -> np.ndarray:
    """Pass 5: the pixel colour log-odds table from the colour bins the feature pass kept
    (None maps = empty scenes: every pixel is background)."""
    builder = ColorModelBuilder()
    for cached, maps in sets:
        patch_maps = maps.maps if maps is not None else [None] * len(cached.names)
        for idx, cmap in zip(cached.color_bins(), patch_maps):
            builder.add_index(idx, None if cmap is None else ~background[cmap])
    return builder.log_odds()


def object_codebook(base: CachedSet, scene: np.ndarray, background: np.ndarray,
                    base_maps: SetMaps, cfg: PastaConfig) -> tuple[np.ndarray, np.ndarray]:
    """Background centres of the scene codebook + K centres fitted on the other patches.

    Returns centres ``(n_bg + K, C) float32`` and their background flags ``(n_bg + K,)``.
    """
    # (N,) bool, one byte per patch, in cache row order (maps are stored in that order)
    keep = np.concatenate([~background[m.ravel()] for m in base_maps.maps])
    if keep.sum() < cfg.clusters:
        raise CalibrationError(f"only {int(keep.sum())} object patches for K={cfg.clusters}: "
                               "the baseline shows (almost) no objects")
    objects = fit_kmeans(RowBlocks(base.cache, keep), cfg.clusters, seed=cfg.seed,
                         epochs=cfg.kmeans_epochs)
    centers = np.concatenate([scene[background], objects]).astype(np.float32)
    flags = np.concatenate([np.ones(int(background.sum()), bool),
                            np.zeros(cfg.clusters, bool)])
    return centers, flags


SPLIT_SAMPLE = 10_000   # baseline rows per cluster for its split K-Means (uniform sample)
SPLIT_MIN_SHARE = 1e-3  # a split part must hold at least this share of the baseline patches


def _cluster_samples(base: CachedSet, centers: torch.Tensor, candidates: np.ndarray,
                     counts: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Uniform samples (about SPLIT_SAMPLE rows) of each candidate cluster's baseline rows,
    gathered in one streamed pass: ``{cluster: (m, C) float16}`` (at most K * SPLIT_SAMPLE
    rows whatever the number of images)."""
    rng = np.random.default_rng(seed)
    keep_p = np.minimum(1.0, SPLIT_SAMPLE / np.maximum(counts, 1))
    parts: dict[int, list[np.ndarray]] = {int(j): [] for j in candidates}
    for rows, ids in assigned_batches(base.cache, base.shapes, centers):
        flat = ids.reshape(-1).cpu().numpy()
        take = rng.random(flat.shape[0]) < keep_p[flat]
        for j in parts:
            sel = take & (flat == j)
            if sel.any():
                parts[j].append(rows[sel].astype(np.float16))  # as in the cache: half the RAM
    return {j: np.concatenate(p) for j, p in parts.items() if p}


def _half_counts(cached: CachedSet, centers: torch.Tensor,
                 halves: dict[int, torch.Tensor]) -> dict[int, np.ndarray]:
    """Rows of each split cluster that fall in each of its parts: ``{cluster: (parts,)}``."""
    out = {j: np.zeros(sub.shape[0], np.int64) for j, sub in halves.items()}
    for rows, ids in assigned_batches(cached.cache, cached.shapes, centers):
        flat = ids.reshape(-1)
        for j, sub in halves.items():
            sel = (flat == j).cpu().numpy()
            if sel.any():
                half = assign_clusters(torch.from_numpy(rows[sel]).to(sub.device), sub)
                out[j] += np.bincount(half.cpu().numpy(), minlength=sub.shape[0])
    return out


def _two_means_halves(base: CachedSet, c_t: torch.Tensor, candidates: np.ndarray,
                      counts: np.ndarray, seed: int, parts: int = 2
                      ) -> tuple[dict[int, torch.Tensor], dict[int, np.ndarray]]:
    """A ``parts``-means on a baseline sample of each candidate cluster: ``{cluster:
    (parts, C) float32 part centres}`` and ``{cluster: (parts,) float64 share of the sample
    in each part}``."""
    samples = _cluster_samples(base, c_t, candidates, counts, seed)
    halves: dict[int, torch.Tensor] = {}
    sample_share: dict[int, np.ndarray] = {}
    for j, half_rows in samples.items():
        rows = half_rows.astype(np.float32)
        if rows.shape[0] < 20 or np.unique(rows[:2000], axis=0).shape[0] < 2:
            continue
        with sklearn_threads():  # its Lloyd loop thrashes with other work on the cores
            km = KMeans(n_clusters=parts, n_init=3, random_state=seed).fit(rows)
        halves[j] = torch.from_numpy(km.cluster_centers_.astype(np.float32)).to(c_t.device)
        sample_share[j] = np.bincount(km.labels_, minlength=parts) / rows.shape[0]
    return halves, sample_share


def _half_ratio(cached: CachedSet, c_t: torch.Tensor, halves: dict[int, torch.Tensor],
                base_share: dict[int, np.ndarray], n_total: int) -> dict[int, np.ndarray]:
    """``{cluster: (parts,) float64}`` each part's share of ``cached``'s patches over its share
    of the baseline (``inf`` where the baseline share is 0)."""
    counts = _half_counts(cached, c_t, halves)
    n = max(int(n_total), 1)
    return {j: np.where(base_share[j] > 0, counts[j] / n / np.maximum(base_share[j], 1e-12),
                        np.inf) for j in halves}


def _apply_splits(centers: np.ndarray, background: np.ndarray,
                  kept: list[tuple[int, np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Replace each kept cluster's centre by its part 0 and append the other parts (with
    their background flags). kept: ``(cluster, (P, C) part centres, (P - 1,) bool flags of
    parts 1..P-1)``."""
    new_centers, new_flags = centers.copy(), background.copy()
    for j, parts, _ in kept:
        new_centers[j] = parts[0]
    if kept:
        new_centers = np.concatenate([new_centers, *[p[1:] for _, p, _ in kept]])
        new_flags = np.concatenate([new_flags, *[np.asarray(f, bool) for _, _, f in kept]])
    return new_centers.astype(np.float32), new_flags


def _baseline_shares(halves: dict[int, torch.Tensor], sample_share: dict[int, np.ndarray],
                     base_counts: np.ndarray) -> dict[int, np.ndarray]:
    """``{cluster: (parts,)}`` each part's share of all baseline patches."""
    n_base = max(int(base_counts.sum()), 1)
    return {j: sample_share[j] * base_counts[j] / n_base for j in halves}


def split_mixed_clusters(base: CachedSet, ref: CachedSet, centers: np.ndarray,
                         background: np.ndarray, base_counts: np.ndarray,
                         ref_counts: np.ndarray, cfg: PastaConfig, device: torch.device | str
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    """Refine Phase 1: split object clusters of which one part never shows up in the reference.

    K-Means can merge a rare anomaly material with a frequent target cluster (the merged
    cluster then has R_k ~ 1 and no anomaly is found). Each object cluster that is not already
    an anomaly cluster is split by a ``cfg.split_parts``-means on a sample of its baseline
    patches; the split is kept when one part has ``P_ref / P_base < ratio_threshold`` and holds
    at least SPLIT_MIN_SHARE of the baseline patches. More than two parts let an anomaly part
    separate from a distractor (a paper label) that shares its cluster and that the
    reference shows (BENCHMARKS.md, issue 9, session 11). Kept splits replace the cluster's
    centre by its part 0 and append the others, so the ratio rule of Phase 2 sees them.

    centers ``(K', C) float32``, background ``(K',) bool``, and the ``(K',)`` baseline and
    reference counts under ``centers`` -> new centres, flags, and the number of clusters split.
    """
    k = centers.shape[0]
    c_t = torch.from_numpy(centers).to(device)
    p_base, p_ref = aa.distribution(base_counts), aa.distribution(ref_counts)
    already = aa.anomaly_clusters(p_ref, p_base, cfg.ratio_threshold)
    candidates = np.flatnonzero(~background & ~already & (p_base >= 2 * SPLIT_MIN_SHARE))
    halves, sample_share = _two_means_halves(base, c_t, candidates, base_counts, cfg.seed,
                                             cfg.split_parts)
    pb_all = _baseline_shares(halves, sample_share, base_counts)
    ratios = _half_ratio(ref, c_t, halves, pb_all, int(ref_counts.sum()))
    kept = []
    for j, sub in halves.items():
        pb, ratio = pb_all[j], ratios[j]
        if np.any((ratio < cfg.ratio_threshold) & (pb >= SPLIT_MIN_SHARE)):
            kept.append((j, sub.cpu().numpy(), np.zeros(sub.shape[0] - 1, bool)))
            log.info("split cluster %d: parts P_base %s, R %s", j, np.round(pb, 4),
                     np.round(ratio, 3))
    new_centers, new_flags = _apply_splits(centers, background, kept)
    log.info("cluster split: %d of %d object clusters split (K' %d -> %d)", len(kept),
             int((~background).sum()), k, new_centers.shape[0])
    return new_centers, new_flags, len(kept)


DISTRACTOR_PARTS = 4  # an anomaly cluster is cut into this many parts by the distractor split


def split_distractor_clusters(base: CachedSet, ref: CachedSet, empty: CachedSet | None,
                              centers: np.ndarray, background: np.ndarray,
                              counts: tuple[np.ndarray, np.ndarray, np.ndarray | None],
                              cfg: PastaConfig, device: torch.device | str
                              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Split anomaly clusters that also hold something the anomaly-free sets show.

    A distractor present in every set (a yellow paper label) can share an anomaly cluster
    with a rare material (brass): the merged cluster is still rare in the reference, and every
    label becomes an anomaly. Each anomaly cluster (``P_ref / P_base < ratio_threshold``, not
    background) is cut into DISTRACTOR_PARTS by a K-Means on a sample of its baseline
    patches; a part is *present* in the anomaly-free sets when its ``P_ref / P_base`` or,
    given the empty set, ``P_empty / P_base`` is at least ``ratio_threshold``. The split is
    kept when some part is present and some part (with >= SPLIT_MIN_SHARE of the baseline)
    is not; every part becomes a cluster, a present one flagged background when
    ``P_empty / P_base >= background_ratio`` (as Phase 2b flags background clusters). The
    ratio rule afterwards (:func:`free_set_anomalies`) leaves the present parts out of the
    anomalies and keeps the absent ones.

    counts: ``(K',)`` baseline, reference and (or None) empty counts under ``centers``.
    Returns new centres ``(K'', C) float32``, flags ``(K'',) bool`` and the number split.
    """
    base_counts, ref_counts, emp_counts = counts
    c_t = torch.from_numpy(centers).to(device)
    anomaly = free_set_anomalies(base_counts, ref_counts, None, background, cfg)
    candidates = np.flatnonzero(anomaly & (aa.distribution(base_counts) >= 2 * SPLIT_MIN_SHARE))
    parts, sample_share = _two_means_halves(base, c_t, candidates, base_counts, cfg.seed,
                                            DISTRACTOR_PARTS)
    pb_all = _baseline_shares(parts, sample_share, base_counts)
    r_ref = _half_ratio(ref, c_t, parts, pb_all, int(ref_counts.sum()))
    r_emp = (_half_ratio(empty, c_t, parts, pb_all, int(emp_counts.sum()))
             if empty is not None and emp_counts is not None
             else {j: np.zeros(DISTRACTOR_PARTS) for j in parts})
    kept = []
    for j, sub in parts.items():
        present = (r_ref[j] >= cfg.ratio_threshold) | (r_emp[j] >= cfg.ratio_threshold)
        absent = ~present & (pb_all[j] >= SPLIT_MIN_SHARE)
        if not (present.any() and absent.any()):
            continue
        order = np.r_[np.flatnonzero(absent)[:1], np.delete(np.arange(present.size),
                                                            np.flatnonzero(absent)[:1])]
        is_bg = present & (r_emp[j] >= cfg.background_ratio)
        kept.append((j, sub.cpu().numpy()[order], is_bg[order][1:]))
        log.info("distractor split of anomaly cluster %d: P_base %s, R_ref %s, R_empty %s", j,
                 np.round(pb_all[j], 4), np.round(r_ref[j], 3), np.round(r_emp[j], 3))
    new_centers, new_flags = _apply_splits(centers, background, kept)
    return new_centers, new_flags, len(kept)


def free_set_anomalies(base_counts: np.ndarray, ref_counts: np.ndarray,
                       emp_counts: np.ndarray | None, background: np.ndarray,
                       cfg: PastaConfig) -> np.ndarray:
    """``(K,) bool`` anomaly clusters: ``P_ref / P_base < ratio_threshold``, not background,
    and with ``distractor_rule`` and an empty set also ``P_empty / P_base < ratio_threshold``
    (what empty scenes show is never an anomaly)."""
    p_base = aa.distribution(base_counts)
    anomaly = aa.anomaly_clusters(aa.distribution(ref_counts), p_base,
                                  cfg.ratio_threshold) & ~background
    if cfg.distractor_rule and emp_counts is not None:
        anomaly &= aa.anomaly_clusters(aa.distribution(emp_counts), p_base,
                                       cfg.ratio_threshold)
    return anomaly


def fit_codebook(extractor: FeatureExtractor, base: CachedSet, empty: CachedSet | None,
                 cfg: PastaConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Phase 1: centres, background flags and where the background came from."""
    log.info("K-Means: %d patches from %d baseline images, K=%d", base.cache.rows,
             len(base.names), cfg.clusters)
    scene = fit_kmeans(RowBlocks(base.cache), cfg.clusters, seed=cfg.seed,
                       epochs=cfg.kmeans_epochs)
    scene_t = torch.from_numpy(scene).to(extractor.device)
    base_maps = base.maps(scene_t)
    empty_maps = empty.maps(scene_t) if empty is not None else None
    background, source, _ = background_clusters(base_maps, empty_maps,
                                                aa.distribution(base_maps.counts), cfg)
    if not cfg.object_codebook:
        return scene, background, source
    centers, flags = object_codebook(base, scene, background, base_maps, cfg)
    return centers, flags, source


def _scene_descriptors(extractor: FeatureExtractor, segmenter, centers: torch.Tensor,
                       source: ImageSource, limit: int | None = None) -> list[np.ndarray]:
    """Per image of ``source`` (its first ``limit``), the ``(n_i, C) float32`` descriptors of
    the instances the segmenter finds (:func:`distractor_bank.instance_descriptors`)."""
    per_image = []
    for _, image in source():
        if limit is not None and len(per_image) >= limit:
            break
        prepared = extractor.prepare(image)
        feats = extractor.features([prepared])
        ids = segmenter.segment(prepared, assign_clusters(feats, centers)[0])
        per_image.append(db.instance_descriptors(ids, db.unit_features(feats[0]))[1])
    return per_image


def empty_scene_bank(extractor: FeatureExtractor, empty: ImageSource, baseline: ImageSource,
                     model: CalibratedModel, cfg: PastaConfig) -> tuple[np.ndarray, float] | None:
    """The empty-scene instance bank (:mod:`pasta_ros.core.distractor_bank`): every instance
    the weight-free segmenter finds in an empty scene, under the calibrated model, less the
    entries :func:`distractor_bank.prune_bank` drops against the first ``BASELINE_IMAGES``
    baseline images, and its threshold. None when fewer than two empty images show an
    instance or no entry is kept. Records ``distractor_bank`` (entries kept),
    ``distractor_bank_found`` and ``distractor_threshold`` in ``model.stats``."""
    from pasta_ros.core.segmenters import build_segmenter

    segmenter = build_segmenter("clusters", model, cfg)
    centers = torch.from_numpy(model.centers).to(extractor.device)
    per_image = _scene_descriptors(extractor, segmenter, centers, empty)
    fitted = db.fit_bank(per_image)
    model.stats["distractor_bank"] = 0
    if fitted is None:
        return None
    found, threshold = fitted
    base = _scene_descriptors(extractor, segmenter, centers, baseline, db.BASELINE_IMAGES)
    bank = db.prune_bank(per_image, threshold, base)
    model.stats.update(distractor_bank=int(bank.shape[0]), distractor_bank_found=len(found),
                       distractor_threshold=round(threshold, 4))
    log.info("distractor bank: %d of %d empty-scene instances kept (threshold %.3f)",
             bank.shape[0], len(found), threshold)
    return (bank, threshold) if len(bank) else None


def calibrate(extractor: FeatureExtractor, baseline: ImageSource, reference: ImageSource,
              empty: ImageSource | None, cfg: PastaConfig, *, weights_hash: str = "",
              quiet: bool = False, progress: Progress | None = None,
              cache_dir: str | Path | None = None) -> CalibratedModel:
    """Run Phases 1-2 (and segmenter statistics); returns an unsaved CalibratedModel.
    The feature caches are files in ``cache_dir`` (None: the system temp dir).

    ``progress(phase, images_done)`` is called as the work goes: phase "features" after each
    backbone batch (images_done counts all three sets), then "clustering", "split" and
    "colour_model". An exception it raises (a cancel) stops the calibration; the feature
    caches are removed either way.
    """
    done = [0]

    def report(phase: str, n: int = 0) -> None:
        done[0] += n
        if progress is not None:
            progress(phase, done[0])

    def on_batch(n: int) -> None:
        report("features", n)

    c = extractor.channels
    sets: list[CachedSet] = []
    try:
        base = CachedSet(c, cache_dir)
        sets.append(base)
        base.fill(extractor, baseline, cfg.batch_size, "baseline", quiet, on_batch)
        ref = CachedSet(c, cache_dir)
        sets.append(ref)
        ref.fill(extractor, reference, cfg.batch_size, "reference", quiet, on_batch)
        emp = None
        if empty is not None:
            emp = CachedSet(c, cache_dir)
            sets.append(emp)
            emp.fill(extractor, empty, cfg.batch_size, "empty", quiet, on_batch)
        report("clustering")
        centers_np, background, bg_source = fit_codebook(extractor, base, emp, cfg)
        centers = torch.from_numpy(centers_np).to(extractor.device)
        base_maps, ref_maps = base.maps(centers), ref.maps(centers)
        splits = 0
        if cfg.split_clusters:
            report("split")
            centers_np, background, splits = split_mixed_clusters(
                base, ref, centers_np, background, base_maps.counts, ref_maps.counts, cfg,
                extractor.device)
        if splits:  # new centres: the maps are computed again under them
            centers = torch.from_numpy(centers_np).to(extractor.device)
            base_maps, ref_maps = base.maps(centers), ref.maps(centers)
        emp_maps = emp.maps(centers) if emp is not None else None
        distractor_splits = 0
        if cfg.distractor_rule:
            report("split")
            centers_np, background, distractor_splits = split_distractor_clusters(
                base, ref, emp, centers_np, background,
                (base_maps.counts, ref_maps.counts,
                 emp_maps.counts if emp_maps is not None else None), cfg, extractor.device)
        if distractor_splits:
            centers = torch.from_numpy(centers_np).to(extractor.device)
            base_maps, ref_maps = base.maps(centers), ref.maps(centers)
            emp_maps = emp.maps(centers) if emp is not None else None
        report("colour_model")
        colour_sets = [(base, base_maps), (ref, ref_maps)]
        colour_sets += [(emp, None)] if emp is not None else []
        log_odds = color_model(colour_sets, background)
    finally:
        for cached in sets:
            cached.close()
    p_base, p_ref = aa.distribution(base_maps.counts), aa.distribution(ref_maps.counts)
    p_empty = aa.distribution(emp_maps.counts) if emp_maps is not None else None
    anomaly = free_set_anomalies(base_maps.counts, ref_maps.counts,
                                 emp_maps.counts if emp_maps is not None else None,
                                 background, cfg)
    stats = {"baseline_images": len(base_maps.names), "reference_images": len(ref_maps.names),
             "empty_images": len(emp_maps.names) if emp_maps else 0,
             "baseline_patches": int(base_maps.counts.sum()),
             "reference_patches": int(ref_maps.counts.sum()),
             "object_clusters": int((~background).sum()), "split_clusters": splits,
             "distractor_splits": distractor_splits,
             "background_clusters": int(background.sum())}
    model = CalibratedModel(
        backbone=cfg.backbone, weights_hash=weights_hash,
        input_size=(cfg.input_width, cfg.input_height), stride=extractor.info.stride,
        centers=centers_np, p_baseline=p_base, p_reference=p_ref, anomaly=anomaly,
        background=background, color_log_odds=log_odds, ratio_threshold=cfg.ratio_threshold,
        vote_threshold=cfg.vote_threshold, seed=cfg.seed, background_source=bg_source,
        p_empty=p_empty, stats=stats, color_weight=extractor.color_weight)
    if cfg.distractor_bank and empty is not None:
        fitted = empty_scene_bank(extractor, empty, baseline, model, cfg)
        if fitted is not None:
            model.distractor_bank, model.distractor_threshold = fitted
    checks = calibration_checks(model, cfg.clusters)
    for check in checks:
        log.warning("self-check %s: %s", check.code, check.message)
    stats["self_checks"] = [c.to_json() for c in checks]
    return model.finalize()
