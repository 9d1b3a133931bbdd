"""The distractor rule (``distractor_rule``): what the anomaly-free sets show is no anomaly."""

from __future__ import annotations

import numpy as np
import torch

from pasta_ros.core.calibration import (
    DISTRACTOR_PARTS,
    CachedSet,
    free_set_anomalies,
    split_distractor_clusters,
)
from pasta_ros.core.config import PastaConfig
from tests.test_calibration_split import ANOMALY, OTHER, TARGET, cached, unit

LABEL = np.array([1, 0.55, 0.1], np.float32)  # a yellow label: near brass in feature space


def counts(sets: list[CachedSet | None], centers: np.ndarray) -> tuple:
    c = torch.from_numpy(centers.astype(np.float32))
    return tuple(None if s is None else s.maps(c).counts for s in sets)


def scene(with_empty: bool, rng: np.random.Generator):
    """Baseline with brass and a few labels, a reference with labels and no brass, and
    (optionally) empty scenes with labels on the belt; 20 rows = 1 % of the baseline."""
    base = cached([(TARGET, 1200), (ANOMALY, 380), (LABEL, 20), (OTHER, 400)], rng)
    ref = cached([(TARGET, 1500), (LABEL, 2), (OTHER, 498)], rng)
    empty = cached([(LABEL, 20), (OTHER, 980)], rng) if with_empty else None
    merged = unit(0.95 * unit(ANOMALY) + 0.05 * unit(LABEL))  # K-Means' brass+label centre
    centers = np.stack([merged, unit(TARGET), unit(OTHER)]).astype(np.float32)
    return base, ref, empty, centers, np.array([False, False, True])


def test_free_set_anomalies_by_hand():
    base = np.array([100, 100, 800])
    ref = np.array([0, 100, 900])
    empty = np.array([10, 0, 990])  # cluster 0: P_empty/P_base = 0.01/0.1 = 0.1 >= 0.05
    bg = np.array([False, False, True])
    on, off = PastaConfig().replace(distractor_rule=True), PastaConfig()
    assert free_set_anomalies(base, ref, None, bg, on).tolist() == [True, False, False]
    assert free_set_anomalies(base, ref, empty, bg, off).tolist() == [True, False, False]
    assert free_set_anomalies(base, ref, empty, bg, on).tolist() == [False, False, False]
    empty2 = np.array([4, 0, 996])  # 0.004/0.1 = 0.04 < 0.05: still an anomaly
    assert free_set_anomalies(base, ref, empty2, bg, on).tolist() == [True, False, False]


def test_a_label_sharing_the_brass_cluster_is_split_off_and_is_no_anomaly():
    for with_empty in (True, False):
        rng = np.random.default_rng(3)
        base, ref, empty, centers, bg = scene(with_empty, rng)
        cfg = PastaConfig().replace(distractor_rule=True)
        before = counts([base, ref, empty], centers)
        # the merged cluster is an anomaly by the reference (the labels are 0.5 % of it);
        # with the empty set the veto alone would drop it, brass included: hence the split
        assert free_set_anomalies(before[0], before[1], None, bg, cfg)[0]
        if with_empty:
            assert not free_set_anomalies(*before, bg, cfg)[0]
        new, flags, n = split_distractor_clusters(base, ref, empty, centers, bg, before,
                                                  cfg, "cpu")
        assert n == 1 and new.shape == (3 + DISTRACTOR_PARTS - 1, 3)
        after = counts([base, ref, empty], new)
        anomaly = free_set_anomalies(*after, flags, cfg)
        label = np.array([unit(c) @ unit(LABEL) > 0.99 for c in new])
        brass = np.array([unit(c) @ unit(ANOMALY) > 0.99 for c in new])
        assert label.any() and not anomaly[label].any()
        assert anomaly.any() and brass[anomaly].all()
        # labels on the empty belt: P_empty/P_base = 0.02/0.01 = 2 >= 0.5 -> background
        assert flags[label].all() == with_empty and flags[~label].tolist() == [
            False, False, True] + [False] * (int((~label).sum()) - 3)
        for s in (base, ref, empty):
            if s is not None:
                s.close()


def test_a_pure_anomaly_cluster_is_left_alone():
    rng = np.random.default_rng(4)
    base = cached([(TARGET, 1200), (ANOMALY, 400), (OTHER, 400)], rng)
    ref = cached([(TARGET, 1500), (OTHER, 500)], rng)
    empty = cached([(OTHER, 1000)], rng)
    centers = np.stack([unit(ANOMALY), unit(TARGET), unit(OTHER)]).astype(np.float32)
    bg = np.array([False, False, True])
    c = counts([base, ref, empty], centers)
    new, flags, n = split_distractor_clusters(base, ref, empty, centers, bg, c, PastaConfig(),
                                              "cpu")
    assert n == 0 and np.array_equal(new, centers) and np.array_equal(flags, bg)
    assert free_set_anomalies(*c, bg, PastaConfig()).tolist() == [True, False, False]
    for s in (base, ref, empty):
        s.close()
