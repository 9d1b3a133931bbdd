"""Relative-depth watershed seeds (``seed_depth``) on hand-made masks."""

from __future__ import annotations

import cv2
import numpy as np

from pasta_ros.core.segmenters.clusters import depth_seeds, split_instances


def discs(*circles: tuple[int, int, int], shape=(120, 170)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for x, y, r in circles:
        cv2.circle(m, (x, y), r, 1, -1)
    return m.astype(bool)


# r = 30 and 14, centres 43 px apart; cv2 fills discs of radius r + 0.5, so the chord where
# they meet has half-width sqrt(30.5^2 - 29.87^2) = 6.2 px (29.87 = (43^2 + 30.5^2 - 14.5^2)
# / (2 * 43)); the distance transform reads 6.0 there and 14.0 at the small disc's centre:
# that maximum's relative depth is 1 - 6.0 / 14.0 = 0.57.
BIG_SMALL = discs((50, 60, 30), (93, 60, 14))


def test_a_small_disc_touching_a_large_one_is_its_own_instance():
    old = split_instances(BIG_SMALL, 0.5, 150)  # core rule: 14 < 0.5 x 30, no seed
    assert old.max() == 1
    ids = split_instances(BIG_SMALL, 0.5, 150, depth=0.5)
    assert ids.max() == 2
    areas = sorted(np.bincount(ids.ravel())[1:].tolist())
    assert abs(areas[0] - np.pi * 14 ** 2) < 0.15 * np.pi * 14 ** 2
    assert abs(areas[1] - np.pi * 30 ** 2) < 0.1 * np.pi * 30 ** 2


def test_the_depth_threshold_matches_the_hand_computed_saddle():
    comps = cv2.connectedComponents(BIG_SMALL.astype(np.uint8), connectivity=8)[1]
    dist = cv2.distanceTransform(BIG_SMALL.astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[60, 80] == 6.0 and abs(dist[60, 93] - 14.0) < 1e-3
    assert depth_seeds(dist, 0.55, comps)[0] - 1 == 2  # 0.57 >= 0.55: two seeds
    assert depth_seeds(dist, 0.6, comps)[0] - 1 == 1  # 0.57 < 0.6: one seed


def test_one_piece_stays_one_instance():
    rod = np.zeros((60, 200), bool)
    rod[25:35, 10:190] = True  # a flat distance ridge: no maximum of any depth
    square = discs(shape=(100, 100))
    square[20:80, 20:80] = True
    ring = discs((60, 60, 40))
    ring[discs((60, 60, 22))] = False
    for m in (rod, square, ring):
        assert split_instances(m, 0.5, 150, depth=0.5).max() == 1
    two = discs((40, 60, 20), (78, 60, 20))  # equal discs, narrow neck: two either way
    assert split_instances(two, 0.5, 150).max() == 2
    assert split_instances(two, 0.5, 150, depth=0.5).max() == 2
