"""The cluster split refinement (``split_clusters``) on hand-made patch features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pasta_ros.core import anomaly_analysis as aa
from pasta_ros.core.calibration import CachedSet, split_mixed_clusters
from pasta_ros.core.config import PastaConfig

C, H, W = 3, 10, 10
TARGET, ANOMALY, OTHER, TARGET_B = (np.array(v, np.float32) for v in
                                    ([1, 0, 0], [1, 0.35, 0], [0, 0, 1], [1, -0.35, 0]))


def cached(groups: list[tuple[np.ndarray, int]], rng: np.random.Generator) -> CachedSet:
    """One 'image' per 100 rows: ``count`` noisy unit rows around each direction."""
    rows = np.concatenate([d + 0.02 * rng.standard_normal((n, C)) for d, n in groups])
    rows = rows[rng.permutation(len(rows))].astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    out = CachedSet(C)
    for i in range(0, len(rows), H * W):
        out.cache.append(torch.from_numpy(rows[i:i + H * W]))
        out.shapes.append((1, H, W))
        out.names.append(f"img{i}")
    return out


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def split(base: CachedSet, ref: CachedSet, centers: np.ndarray, background: np.ndarray,
          cfg: PastaConfig | None = None):
    """split_mixed_clusters with the counts of both sets under ``centers`` (default: the
    2-part split)."""
    c = torch.from_numpy(centers.astype(np.float32))
    return split_mixed_clusters(base, ref, centers.astype(np.float32), background,
                                base.maps(c).counts, ref.maps(c).counts,
                                cfg or PastaConfig(split_parts=2), "cpu")


def ratios(base: CachedSet, ref: CachedSet, centers: np.ndarray) -> np.ndarray:
    c = torch.from_numpy(centers)
    return aa.cluster_ratio(aa.distribution(ref.maps(c).counts),
                            aa.distribution(base.maps(c).counts))


@pytest.mark.parametrize("parts", [2, 4])
def test_a_merged_anomaly_is_split_off_and_found_by_the_ratio_rule(parts: int):
    rng = np.random.default_rng(0)
    base = cached([(TARGET, 1200), (ANOMALY, 400), (OTHER, 400)], rng)
    ref = cached([(TARGET, 1500), (OTHER, 500)], rng)
    # K-Means merged target and anomaly into one centre (their mean), as in the failure case
    centers = np.stack([unit(0.75 * unit(TARGET) + 0.25 * unit(ANOMALY)), unit(OTHER)])
    assert not (ratios(base, ref, centers) < 0.05).any()  # the ratio rule misses it
    new, flags, splits = split(base, ref, centers, np.zeros(2, bool),
                               PastaConfig(split_parts=parts))
    assert splits == 1 and new.shape == (1 + parts, C) and not flags.any()
    r = ratios(base, ref, new)
    anomalous = np.flatnonzero(r < 0.05)
    assert anomalous.size >= 1
    # the new anomaly centres are the anomaly direction, the other parts the target's
    assert all(unit(new[i]) @ unit(ANOMALY) > 0.99 for i in anomalous)
    assert all(unit(new[i]) @ unit(TARGET) > 0.99 for i in set(range(parts + 1)) - {1}
               - set(anomalous.tolist()))
    for cached_set in (base, ref):
        cached_set.close()


def test_no_split_when_both_halves_are_in_the_reference_or_for_background():
    rng = np.random.default_rng(1)
    base = cached([(TARGET, 800), (TARGET_B, 800), (OTHER, 400)], rng)
    ref = cached([(TARGET, 800), (TARGET_B, 800), (OTHER, 400)], rng)
    centers = np.stack([unit(TARGET), unit(OTHER)]).astype(np.float32)
    new, flags, splits = split(base, ref, centers, np.zeros(2, bool))
    assert splits == 0 and np.array_equal(new, centers)
    # a background cluster is never split, even when half of it is missing from the reference
    base2 = cached([(TARGET, 1200), (ANOMALY, 400), (OTHER, 400)], rng)
    merged = np.stack([unit(0.75 * unit(TARGET) + 0.25 * unit(ANOMALY)), unit(OTHER)])
    _, _, splits = split(base2, ref, merged, np.array([True, False]))
    assert splits == 0
    for cached_set in (base, ref, base2):
        cached_set.close()


def test_more_parts_split_an_anomaly_off_a_label_the_reference_also_shows():
    # one cluster holds a target, an anomaly and a paper label near the anomaly that the
    # reference shows too: a 2-means cuts target from {anomaly + label} (that half is in
    # the reference: R 0.6, no split); with 4 parts the anomaly gets a part of its own
    rng = np.random.default_rng(2)
    anomaly, label = np.array([0.3, 1, 0], np.float32), np.array([0.3, 1, 0.35], np.float32)
    base = cached([(TARGET, 1200), (anomaly, 400), (label, 200), (OTHER, 200)], rng)
    ref = cached([(TARGET, 1500), (label, 100), (OTHER, 400)], rng)
    centers = np.stack([unit(TARGET + anomaly), unit(OTHER)]).astype(np.float32)
    assert split(base, ref, centers, np.zeros(2, bool))[2] == 0
    new, flags, splits = split(base, ref, centers, np.zeros(2, bool),
                               PastaConfig(split_parts=4))
    assert splits == 1 and new.shape == (5, C) and not flags.any()
    anomalous = np.flatnonzero(ratios(base, ref, new) < 0.05)
    assert anomalous.size == 1 and unit(new[anomalous[0]]) @ unit(anomaly) > 0.99
    for cached_set in (base, ref):
        cached_set.close()
