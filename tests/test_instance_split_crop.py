"""The instance split's cheap path: candidates on the patch grid, the prior on boxes only."""

from __future__ import annotations

import numpy as np

from pasta_ros.core.instance_split import anomaly_prior, anomaly_prior_crop, grid_candidates


def test_the_prior_on_a_box_equals_the_full_frame_prior_there():
    rng = np.random.default_rng(0)
    patches = rng.random((16, 28)) < 0.2
    objects = rng.random((16, 28)) < 0.5
    for h, w in ((128, 224), (512, 912), (131, 229)):  # integer and non-integer factors
        full = anomaly_prior(patches, h, w, objects)
        plain = anomaly_prior(patches, h, w)
        for box in (np.s_[0:h, 0:w], np.s_[3:40, 100:117], np.s_[h - 9:h, w - 30:w]):
            np.testing.assert_allclose(anomaly_prior_crop(patches, h, w, box, objects),
                                       full[box], atol=1e-5)
            np.testing.assert_allclose(anomaly_prior_crop(patches, h, w, box), plain[box],
                                       atol=1e-5)


def test_grid_candidates_by_hand():
    # 4 x 4 patches of 8 px on a 32 x 32 frame; patch centres at pixels 4, 12, 20, 28
    patches = np.zeros((4, 4), bool)
    patches[0, 0] = patches[3, 3] = True
    ids = np.zeros((32, 32), np.int32)
    ids[0:16, 0:16] = 1   # centres (4,4) anomaly + (4,12), (12,4), (12,12) not: mixed
    ids[16:32, 0:16] = 2  # no anomaly centre
    ids[24:32, 24:32] = 3  # only the anomaly centre (28, 28)
    assert grid_candidates(ids, patches).tolist() == [1]
