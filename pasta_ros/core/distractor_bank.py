"""Empty-scene instance bank: instances that look like what the empty scenes show are
background (beyond the paper; issue 9).

Empty scenes hold no target and no anomaly, so every instance the segmenter finds in one is
a distractor (a paper label, dirt, a belt mark). Their patches fall in object clusters, mixed
with targets by K-Means (BENCHMARKS.md, issue 9, session 10), so no cluster-level rule can drop
them; their instances, described by their mean patch feature, are told apart. Calibration
keeps each empty-scene instance's descriptor (the bank) and a threshold (nothing tuned): the
``BANK_QUANTILE`` quantile, over the bank, of each entry's most similar entry from another
empty image. Entries that claim more of the baseline's instances than of the other empty
scenes' are dropped (:func:`prune_bank`). A frame's instance whose most similar bank entry
reaches the threshold is background, unless the vote calls it an anomaly: the bank never
removes an instance with anomaly evidence (a missed anomaly passes into the product, a kept
paper label costs one wasted pick).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

BANK_QUANTILE = 0.1  # of the leave-one-image-out similarities: most distractors reach it
BASELINE_IMAGES = 32  # baseline images segmented for prune_bank (the first ones of the set)
SAMPLES = 4  # ids sampled SAMPLES x SAMPLES times per patch for the instance coverage


def unit_features(feats: torch.Tensor) -> np.ndarray:
    """``(C, h, w)`` extractor features -> ``(C, h, w) float32`` numpy, unit norm per patch."""
    return torch.nn.functional.normalize(feats.float(), dim=0).cpu().numpy()


def instance_coverage(ids: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Each instance's coverage of each cell of an ``(h, w)`` patch grid.

    ids ``(H, W) int32`` instance ids (0 = none) over the frame the grid covers. Returns the
    ids ``(N,) int64`` present and their coverage ``(N, h * w) float32`` (ids sampled
    SAMPLES x SAMPLES times per patch, row-major cells).
    """
    grid = cv2.resize(ids.astype(np.int32), (w * SAMPLES, h * SAMPLES),
                      interpolation=cv2.INTER_NEAREST)
    patch = (np.arange(h)[:, None] * w + np.arange(w)[None, :]).repeat(SAMPLES, 0)
    patch = patch.repeat(SAMPLES, 1)
    n = int(grid.max()) + 1
    cover = np.bincount(grid.ravel().astype(np.int64) * (h * w) + patch.ravel(),
                        minlength=n * h * w).reshape(n, h * w)[1:].astype(np.float32)
    present = np.flatnonzero(cover.sum(1) > 0)
    return present + 1, cover[present]


def instance_descriptors(ids: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit mean patch feature of each instance, weighted by its coverage of each patch.

    ids ``(H, W) int32`` instance ids (0 = none) over the frame the features came from;
    feats ``(C, h, w) float32`` unit patch features. Returns the ids ``(N,) int64`` present
    with any coverage and their descriptors ``(N, C) float32``.
    """
    c, h, w = feats.shape
    present, cover = instance_coverage(ids, h, w)
    desc = cover @ feats.reshape(c, h * w).T
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    return present, desc.astype(np.float32)


def fit_bank(descriptors: list[np.ndarray]) -> tuple[np.ndarray, float] | None:
    """Bank ``(N, C) float32`` and threshold from per-empty-image descriptor arrays
    (``(n_i, C)`` each); None when fewer than two images show an instance (no threshold can
    be computed from the bank alone)."""
    owners = np.concatenate([np.full(len(d), i) for i, d in enumerate(descriptors)])
    if len(np.unique(owners)) < 2:
        return None
    bank = np.concatenate(descriptors).astype(np.float32)
    sims = bank @ bank.T
    other = owners[:, None] != owners[None, :]
    nearest = np.where(other, sims, -np.inf).max(1)
    return bank, float(np.quantile(nearest, BANK_QUANTILE))


def prune_bank(empty: list[np.ndarray], threshold: float, baseline: list[np.ndarray]
               ) -> np.ndarray:
    """The bank entries that claim no more of the baseline than of the empty scenes.

    empty: per empty image, its instances' descriptors ``(n_i, C)`` (the bank, in order);
    baseline: the same per baseline image. An entry claims an instance whose cosine to it
    reaches ``threshold``. A kind of distractor lies on every belt, and on the baseline
    objects cover some of it, so an entry of one claims at most as many instances per
    baseline image as per *other* empty image; an entry that claims more is like the objects
    (a generic look, or a bank whose threshold fell low) and is dropped. Returns the kept
    entries ``(M, C) float32`` (``M`` may be 0).
    """
    bank = np.concatenate(empty).astype(np.float32)
    owners = np.concatenate([np.full(len(d), i) for i, d in enumerate(empty)])
    other = owners[:, None] != owners[None, :]
    per_empty = ((bank @ bank.T >= threshold) & other).sum(1) / max(len(empty) - 1, 1)
    base = (np.concatenate(baseline) if baseline and sum(map(len, baseline))
            else np.zeros((0, bank.shape[1]), np.float32))
    per_base = (base @ bank.T >= threshold).sum(0) / max(len(baseline), 1)
    return bank[per_base <= per_empty]


def distractor_ids(ids: np.ndarray, feats: np.ndarray, bank: np.ndarray, threshold: float,
                   anomalous: np.ndarray | None = None, vote_threshold: float = 0.1
                   ) -> np.ndarray:
    """``(M,) int64`` ids of ``ids`` whose descriptor's most similar bank entry (cosine)
    reaches ``threshold``. ids/feats as :func:`instance_descriptors`; bank ``(N, C)``.
    anomalous: the frame's ``(h, w) bool`` anomaly patches; when given, an instance whose
    coverage-weighted share of them exceeds ``vote_threshold`` (one the vote calls an
    anomaly) is never a distractor."""
    c, h, w = feats.shape
    present, cover = instance_coverage(ids, h, w)
    if not present.size:
        return present
    desc = cover @ feats.reshape(c, h * w).T
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    hit = (desc @ bank.T).max(1) >= threshold
    if anomalous is not None:
        share = cover @ anomalous.reshape(-1).astype(np.float32) / cover.sum(1)
        hit &= share <= vote_threshold
    return present[hit]


def drop_distractors(ids: np.ndarray, feats: np.ndarray, bank: np.ndarray, threshold: float,
                     anomalous: np.ndarray | None = None, vote_threshold: float = 0.1
                     ) -> np.ndarray:
    """``ids`` with the instances of :func:`distractor_ids` set to 0 (a copy when any)."""
    drop = distractor_ids(ids, feats, bank, threshold, anomalous, vote_threshold)
    if not drop.size:
        return ids
    lut = np.arange(int(ids.max()) + 1, dtype=ids.dtype)
    lut[drop] = 0
    return lut[ids]
