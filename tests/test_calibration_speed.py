"""Issue #12 calibration passes: the colour model from the colour bins kept in the feature
pass equals the one from decoding every image again; the typed feature cache."""

from __future__ import annotations

import numpy as np
import torch

from pasta_ros.core.clustering import FeatureCache
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.segmenters.color_model import ColorModelBuilder, color_index


def test_typed_cache_keeps_uint16_bins_exactly(tmp_path):
    bins = np.array([[0], [4095], [2049], [7]], np.uint16)  # 2049: not exact in float16
    with FeatureCache(1, tmp_path, dtype=np.uint16) as cache:
        cache.append(bins[:2])
        cache.append(bins[2:])
        got = cache.read(1, 4)
    assert got.dtype == np.uint16 and got.ravel().tolist() == [4095, 2049, 7]
    with FeatureCache(2, tmp_path) as cache:  # default: float16 rows read as float32
        cache.append(torch.tensor([[0.5, -1.0]]))
        assert cache.read(0, 1).dtype == np.float32


def test_add_index_equals_add_by_hand():
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8] = (255, 255, 255)  # left half white: bin 4095; right black: bin 0
    is_object = np.zeros((4, 4), bool)  # 4x4 patches of 4x4 pixels
    is_object[0, 0] = True  # its 3x3 neighbourhood is not confident background
    a, b = ColorModelBuilder(), ColorModelBuilder()
    a.add(img, is_object)
    b.add_index(color_index(img).astype(np.uint16), is_object)
    assert np.array_equal(a.background, b.background)
    # confident background: patch columns 0-1 (white) in rows 2-3 only -> 4 patches x 16
    # pixels; columns 2-3 (black) in every row -> 8 patches x 16 pixels
    assert a.background[4095] == 64 and a.background[0] == 128 and a.background.sum() == 192


def test_colour_model_from_kept_bins_equals_a_second_decode(tiny_steel, tmp_path):
    from pasta_ros.core.calibration import calibrate
    from pasta_ros.core.clustering import assign_clusters
    from pasta_ros.pipeline import build_extractor
    from pasta_ros.sources import folder_source
    from tests.conftest import TINY_K, TINY_SIZE

    cfg = PastaConfig().replace(input_width=TINY_SIZE[0], input_height=TINY_SIZE[1],
                                clusters=TINY_K, device="cpu", backend="torch")
    ext = build_extractor(cfg)
    sets = [folder_source(tiny_steel.baseline), folder_source(tiny_steel.reference)]
    model = calibrate(ext, *sets, folder_source(tiny_steel.empty), cfg, quiet=True)
    # the old pass 5: decode + resize every image again, maps under the final centres
    builder = ColorModelBuilder()
    centers = torch.from_numpy(model.centers)
    for source in sets:
        for _, image in source():
            img = ext.prepare(image)
            cmap = assign_clusters(ext.features([img]), centers)[0].numpy()
            builder.add(img, ~model.background[cmap])
    for _, image in folder_source(tiny_steel.empty)():
        builder.add(ext.prepare(image), None)
    np.testing.assert_allclose(model.color_log_odds, builder.log_odds(), atol=1e-6)


def test_kmeans_epochs_drop_only_for_large_baselines():
    from pasta_ros.core.clustering import ROW_BUDGET, kmeans_epochs

    assert kmeans_epochs(1_460_000, 3) == 3  # 200 images at 910x512: unchanged
    assert kmeans_epochs(2_500_000, 3) == 2
    assert kmeans_epochs(7_300_000, 3) == 1  # 1,000 images: one pass, never zero
    assert kmeans_epochs(7_300_000, 3, row_budget=0) == 3
    assert kmeans_epochs(10, 5) == 5 and ROW_BUDGET == 6_000_000
