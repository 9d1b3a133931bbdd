"""Core algorithms on seeded tiny inputs with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pasta_ros.core import anomaly_analysis as aa
from pasta_ros.core.clustering import (
    FeatureCache,
    RowBlocks,
    assign_clusters,
    cluster_counts,
    fit_kmeans,
)
from pasta_ros.core.config import ConfigError, PastaConfig
from pasta_ros.core.errors import CalibrationError
from pasta_ros.core.fusion import ANOMALY, TARGET, fuse
from pasta_ros.core.metrics import ConfusionMatrix, image_auroc
from pasta_ros.core.preprocess import network_size
from pasta_ros.core.segmenters.clusters import clean_mask, fill_holes, split_instances


def blobs(n_per: int = 200, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[:3] * 10
    x = np.concatenate([c + rng.normal(0, 0.3, (n_per, dim)) for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(3), n_per)


def test_kmeans_separates_blobs_and_assignment_agrees():
    x, truth = blobs()
    with FeatureCache(x.shape[1]) as cache:
        for chunk in np.array_split(x, 7):
            cache.append(chunk)
        assert cache.rows == x.shape[0]
        np.testing.assert_allclose(cache.read(10, 20), x[10:20], atol=0.02)  # float16 store
        centers = fit_kmeans(RowBlocks(cache, block=64), 3, seed=0, epochs=2, chunk=64)
    ids = assign_clusters(torch.from_numpy(x), torch.from_numpy(centers)).numpy()
    # each true blob maps to exactly one cluster, and the three clusters differ
    mapping = {t: set(ids[truth == t]) for t in range(3)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 3


def test_assign_grid_matches_rows():
    rng = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 5, 3, 4, generator=rng)
    centers = torch.nn.functional.normalize(torch.randn(6, 5, generator=rng), dim=1)
    by_grid = assign_clusters(grid, centers)
    rows = grid.permute(0, 2, 3, 1).reshape(-1, 5)
    assert by_grid.shape == (2, 3, 4)
    assert torch.equal(by_grid.reshape(-1), assign_clusters(rows, centers))
    assert cluster_counts(by_grid, 6).sum() == 24


def test_row_blocks_filter_and_shuffle_keep_every_row_once():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    keep = np.arange(20) % 3 == 0
    rows = RowBlocks(x, keep, block=6)
    assert rows.n == 7
    plain = np.concatenate(list(rows.blocks()))
    shuffled = np.concatenate(list(rows.blocks(np.random.default_rng(0))))
    np.testing.assert_array_equal(plain, x[keep])
    np.testing.assert_array_equal(np.sort(shuffled[:, 0]), x[keep][:, 0])


def test_fit_kmeans_too_few_patches():
    with pytest.raises(CalibrationError, match="only 5 patches for K=20"):
        fit_kmeans(np.zeros((5, 4), np.float32), 20)


def test_ratio_rule_hand_made():
    p_base = np.array([0.5, 0.3, 0.2, 0.0])
    p_ref = np.array([0.7, 0.3, 0.005, 0.0])
    # R = 1.4, 1.0, 0.025, nan -> only cluster 2 is below 0.05; the empty cluster is not
    assert aa.anomaly_clusters(p_ref, p_base, 0.05).tolist() == [False, False, True, False]
    assert aa.anomaly_clusters(p_ref, p_base, 1.01).tolist() == [False, True, True, False]


def test_background_rules():
    p_base = np.array([0.6, 0.3, 0.1])
    p_empty = np.array([0.95, 0.0, 0.05])
    assert aa.background_from_empty(p_empty, p_base, 0.5).tolist() == [True, False, True]
    cmap = np.array([[0, 0, 0, 0], [0, 1, 2, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    border, inner = aa.border_interior_counts(cmap, 3)
    assert border.tolist() == [12, 0, 0] and inner.tolist() == [0, 3, 1]
    assert aa.background_from_border(border, inner).tolist() == [True, False, False]


def padded_rim_map() -> np.ndarray:
    """32x32 map: cluster 0 on the outer ring and 1 on the next two (the backbone's padding),
    belt cluster 2 from depth 3 in, an object (cluster 3) in the middle 8x8."""
    i = np.arange(32)
    depth = np.minimum(np.minimum(i, 31 - i)[:, None], np.minimum(i, 31 - i)[None, :])
    cmap = np.select([depth == 0, depth <= 2], [0, 1], 2)
    cmap[12:20, 12:20] = 3
    return cmap


def test_ring_counts_by_hand():
    cmap = padded_rim_map()
    assert aa.ring_counts(cmap, 4, 0)[0].tolist() == [124, 0, 0, 0]
    assert aa.ring_counts(cmap, 4, 1)[0].tolist() == [0, 116, 0, 0]
    ring, inner = aa.ring_counts(cmap, 4, 3)  # the ring at depth 3, the 24x24 inside it
    assert ring.tolist() == [0, 0, 100, 0] and inner.tolist() == [0, 0, 512, 64]
    # deeper than an eighth of the short side (32 // 8 = 4): not the border any more
    assert aa.ring_counts(cmap, 4, 5)[0].sum() == 0
    assert aa.ring_counts(cmap[:16, :16], 4, 3)[0].sum() == 0


def test_border_depth_flags_the_belt_behind_a_padded_rim():
    from pasta_ros.core.calibration import SetMaps, background_clusters

    maps = SetMaps(counts=np.zeros(4, np.int64))
    maps.add(["a"], padded_rim_map()[None].astype(np.int16))
    cfg = PastaConfig(clusters=4, border_depth=0)
    # the outer ring alone: only the rim cluster is background, the belt would be an object
    rim_only = background_clusters(maps, None, np.full(4, 0.25), cfg)[0]
    assert rim_only.tolist() == [True, False, False, False]
    # rings 1-3 too: the inner rim cluster and the belt are background, the object is not
    deep = background_clusters(maps, None, np.full(4, 0.25), cfg.replace(border_depth=3))[0]
    assert deep.tolist() == [True, True, True, False]


def test_distribution_of_nothing_is_an_error():
    with pytest.raises(CalibrationError, match="empty"):
        aa.distribution(np.zeros(3))


def hand_made_case():
    """16x16 image, 2x2 patch grid (8 px patches); only the top-left patch is anomalous."""
    anomaly = torch.tensor([[True, False], [False, False]])
    ids = np.zeros((16, 16), np.int32)
    ids[0:8, 0:8] = 1            # 64 px all in the anomaly patch -> share 1.0
    ids[8:16, 0:8] = 3           # 64 px, none anomalous -> 0.0
    ids[0:8, 8:16] = 2           # 64 px in a normal patch ...
    ids[0:1, 0:8] = 2            # ... plus 8 px taken from instance 1 in the anomaly patch
    ids[9:11, 9:13] = 4          # 8 px, normal
    return ids, anomaly


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_fusion_hand_made_answer(compiled):
    ids, anomaly = hand_made_case()
    r = fuse(ids, anomaly, vote_threshold=0.1, compiled=compiled)
    by_area = {i.area: i for i in r.instances}
    # instance 1: 56 px, all anomalous; instance 2: 72 px with 8 anomalous = 0.111 > 0.1
    assert by_area[56].label == ANOMALY and by_area[56].anomaly_share == 1.0
    assert by_area[72].label == ANOMALY and by_area[72].anomaly_share == pytest.approx(8 / 72)
    assert by_area[64].label == TARGET and by_area[64].bbox == (0, 8, 8, 8)
    small = by_area[8]
    assert small.bbox == (9, 9, 4, 2) and small.centroid == (10.5, 9.5)
    assert small.mask.shape == (2, 4) and small.mask.all()
    assert r.labels[0, 0] == ANOMALY and r.labels[12, 3] == TARGET and r.labels[15, 15] == 0
    assert set(np.unique(r.labels)) == {0, 1, 2}
    # a higher threshold turns the 8/72 instance into a target
    r2 = fuse(ids, anomaly, vote_threshold=0.2, compiled=compiled)
    assert r2.labels[4, 12] == TARGET and r2.labels[4, 4] == ANOMALY


@pytest.mark.parametrize("seed", range(6))
def test_fusion_compiled_kernels_equal_the_numpy_path(seed):
    """Random ids of every dtype, sizes off the patch grid, ids with gaps: same outputs."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 200)), int(rng.integers(1, 200))
    n = int(rng.integers(0, 25))
    dtype = (np.uint8, np.int32, np.int64)[seed % 3]
    ids = rng.integers(0, n + 1, (h, w)).astype(dtype)
    ids[ids == n // 2] = 0  # an id with no pixels
    patches = rng.random((max(1, h // 7), max(1, w // 9))) < 0.3
    a = fuse(ids, patches, 0.2, compiled=True)
    b = fuse(ids, patches, 0.2, compiled=False)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [(i.id, i.label, i.bbox, i.area) for i in a.instances] == \
        [(i.id, i.label, i.bbox, i.area) for i in b.instances]
    for x, y in zip(a.instances, b.instances):
        assert x.anomaly_share == pytest.approx(y.anomaly_share, abs=1e-12)
        assert x.centroid == pytest.approx(y.centroid, abs=1e-9)
        np.testing.assert_array_equal(x.mask, y.mask)


def test_assignment_compiled_kernel_equals_torch_ops():
    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.standard_normal((2, 40, 13, 21)).astype(np.float32))
    feats[0, :, 0, 0] = 0.0  # a zero feature: no NaN, a valid id
    centers = torch.nn.functional.normalize(torch.randn(9, 40, generator=torch.Generator()
                                                        .manual_seed(0)), dim=1) * 0.7
    a = assign_clusters(feats, centers, compiled=True)
    b = assign_clusters(feats, centers, compiled=False)
    assert a.shape == (2, 13, 21) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert int(a[0, 0, 0]) == int(centers.pow(2).sum(1).argmin())  # zero feature: smallest c


def test_fusion_torch_path_equals_numpy_path():
    from pasta_ros.core.fusion import instance_histograms, summarize
    ids, anomaly = hand_made_case()
    up = np.kron(anomaly.numpy().astype(np.intp), np.ones((8, 8), np.intp))
    a = summarize(*instance_histograms(ids.astype(np.intp), up, 4))
    b = summarize(*instance_histograms(torch.from_numpy(ids).long(), torch.from_numpy(up), 4))
    for key in a:
        np.testing.assert_allclose(a[key], b[key])


def test_fusion_no_instances():
    r = fuse(np.zeros((8, 8), np.int32), torch.zeros(1, 1, dtype=torch.bool))
    assert r.instances == [] and not r.labels.any()


def test_clean_mask_fills_holes_and_drops_small():
    m = np.zeros((60, 60), bool)
    m[10:40, 10:40] = True
    m[20:25, 20:25] = False          # hole
    m[50:52, 50:52] = True           # speck
    out = clean_mask(m, min_area=50)
    assert out[22, 22] and not out[51, 51] and out[10:40, 10:40].all()
    assert fill_holes(np.zeros((4, 4), np.uint8)).sum() == 0


def test_split_touching_discs():
    yy, xx = np.mgrid[:60, :100]
    m = ((yy - 30) ** 2 + (xx - 30) ** 2 < 20 ** 2) | ((yy - 30) ** 2 + (xx - 68) ** 2 < 20 ** 2)
    labels = split_instances(m, core=0.5, min_area=20)
    assert labels.max() == 2
    assert labels[30, 30] != labels[30, 68] and labels[30, 30] > 0
    one = split_instances((yy - 30) ** 2 + (xx - 30) ** 2 < 20 ** 2, core=0.5, min_area=20)
    assert one.max() == 1


def test_confusion_iou_hand_computed():
    cm = ConfusionMatrix()
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    cm.add(truth, pred)
    # bg: tp 2 (of 3 true, 3 pred) -> 2/4; target: tp 2 (2 true, 3 pred) -> 2/3; anom 2/3
    np.testing.assert_allclose(cm.iou(), [0.5, 2 / 3, 2 / 3])
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert np.isnan(image_auroc([1, 1], [0.1, 0.2]))


def test_network_size_keeps_aspect_and_rounds_to_stride():
    assert network_size(3840, 2160, 910, 512, 8) == (912, 512)
    assert network_size(3840, 2160, 910, 512, 14) == (910, 518)
    assert network_size(910, 512, 910, 512, 16) == (912, 512)
    assert network_size(5, 5, 910, 512, 16) == (512, 512)


def test_config_validation_names_the_field():
    assert PastaConfig().validate().clusters == 20
    with pytest.raises(ConfigError, match="clusters"):
        PastaConfig().replace(clusters=1)
    with pytest.raises(ConfigError, match="backbone"):
        PastaConfig().replace(backbone="resnet")
    with pytest.raises(ConfigError, match="unknown config field"):
        PastaConfig().replace(colour="red")
    with pytest.raises(ConfigError, match="vote_threshold"):
        PastaConfig.from_dict({"vote_threshold": "high"})
    assert PastaConfig.from_dict({"ratio_threshold": 0}).ratio_threshold == 0.0


def test_a_mask_with_no_background_pixel_is_one_instance_not_an_overflow():
    """All object (an all-black frame where black is not background): the distance transform
    is FLT_MAX everywhere; the split must not overflow into negative histogram bins."""
    ids = split_instances(np.ones((40, 60), bool), core=0.5, min_area=10)
    assert ids.dtype == np.int32 and set(np.unique(ids)) == {1}
