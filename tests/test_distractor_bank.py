"""Empty-scene instance bank (``distractor_bank``): what empty scenes show is background."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pasta_ros.core.distractor_bank import (
    BANK_QUANTILE,
    distractor_ids,
    drop_distractors,
    fit_bank,
    instance_descriptors,
    prune_bank,
    unit_features,
)
from tests.test_calibration_split import unit as unit_array


def unit(v) -> np.ndarray:
    return unit_array(np.asarray(v, np.float32))


def two_by_two(vectors: list) -> np.ndarray:
    """``(C, 2, 2)`` unit features, patches in row order."""
    return np.stack([unit(v) for v in vectors]).T.reshape(-1, 2, 2).astype(np.float32)


def test_descriptor_is_the_coverage_weighted_mean_by_hand():
    # 8x8 ids over a 2x2 patch grid (4x4 pixels per patch): instance 1 covers patch 0 fully
    # and a quarter of patch 1; instance 3 covers patch 3 only; id 2 is absent
    ids = np.zeros((8, 8), np.int32)
    ids[0:4, 0:4] = 1
    ids[0:2, 4:6] = 1
    ids[4:8, 4:8] = 3
    feats = two_by_two([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    present, desc = instance_descriptors(ids, feats)
    assert present.tolist() == [1, 3]
    np.testing.assert_allclose(desc[0], unit([1.0, 0.25, 0.0]), atol=1e-6)
    np.testing.assert_allclose(desc[1], unit([1, 1, 0]), atol=1e-6)


def test_bank_threshold_is_the_leave_one_image_out_quantile_by_hand():
    a, b, c = unit([1, 0]), unit([0.8, 0.6]), unit([0, 1])
    bank, thr = fit_bank([np.stack([a, c]), np.stack([b])])
    # nearest from another image: a -> b 0.8, c -> b 0.6, b -> max(0.8, 0.6) = 0.8
    assert bank.shape == (3, 2)
    assert thr == pytest.approx(float(np.quantile([0.8, 0.6, 0.8], BANK_QUANTILE)))
    assert fit_bank([np.stack([a, c])]) is None  # one image: no threshold from the bank
    assert fit_bank([np.stack([a]), np.zeros((0, 2), np.float32)]) is None


def test_entries_claiming_more_of_the_baseline_than_of_the_empty_scenes_are_pruned():
    a, a1, a2 = unit([1, 0, 0]), unit([1, 0.1, 0]), unit([1, 0, 0.1])  # one kind of label
    g = unit([0, 1, 0])  # a generic look, like the objects
    empty = [np.stack([a, g]), np.stack([a1]), np.stack([a2])]
    baseline = [np.stack([unit([0, 1, 0.05]), unit([0.05, 1, 0])]),
                np.stack([unit([0, 1, 0.1]), unit([1, 0.05, 0.05])])]
    # per other empty image: each label entry claims the two other labels (2 / 2), g none;
    # per baseline image: each label entry claims 1 / 2, g claims 3 / 2 > 0: g is dropped
    kept = prune_bank(empty, 0.9, baseline)
    np.testing.assert_allclose(kept, np.stack([a, a1, a2]))
    np.testing.assert_allclose(prune_bank(empty, 0.9, []), np.concatenate(empty))
    assert prune_bank([np.stack([g]), np.stack([a])], 0.9, baseline).shape == (0, 3)


def test_only_instances_like_the_bank_are_dropped():
    ids = np.zeros((8, 8), np.int32)
    ids[0:4, 0:4] = 1  # a "label" like the bank
    ids[4:8, 4:8] = 2  # a target
    feats = two_by_two([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0]])
    bank = np.stack([unit([0.95, 0.05, 0])])
    assert distractor_ids(ids, feats, bank, 0.9).tolist() == [1]
    out = drop_distractors(ids, feats, bank, 0.9)
    assert set(np.unique(out).tolist()) == {0, 2}
    assert (out[4:8, 4:8] == 2).all() and (out[0:4, 0:4] == 0).all()
    assert drop_distractors(ids, feats, bank, 0.999) is ids  # nothing reaches: unchanged
    # the vote calls instance 1 an anomaly (its one patch is anomalous): never dropped
    anomalous = np.array([[True, False], [False, False]])
    assert distractor_ids(ids, feats, bank, 0.9, anomalous, 0.1).size == 0
    assert distractor_ids(ids, feats, bank, 0.9, ~anomalous, 0.1).tolist() == [1]
    # 4 of instance 1's 20 sampled pixels on an anomalous patch: share 0.2, above a 0.1 vote
    # threshold (an anomaly: kept), under 0.3 (a target: dropped)
    ids[0:2, 4:6] = 1
    second = np.array([[False, True], [False, False]])
    assert distractor_ids(ids, feats, bank, 0.5, second, 0.1).size == 0
    assert distractor_ids(ids, feats, bank, 0.5, second, 0.3).tolist() == [1]
    assert distractor_ids(np.zeros((8, 8), np.int32), feats, bank, 0.5).size == 0


def test_unit_features_normalise_each_patch():
    f = torch.tensor([[[3.0, 0.0]], [[4.0, 2.0]]])  # (C=2, h=1, w=2)
    np.testing.assert_allclose(unit_features(f), [[[0.6, 0.0]], [[0.8, 1.0]]], atol=1e-6)


@pytest.fixture(scope="module")
def belt(tmp_path_factory: pytest.TempPathFactory):
    """A tiny conveyor set with paper labels and dirt in every set, empty scenes included."""
    from pasta_ros.data.synth import generate

    return generate("belt_dense_dev", tmp_path_factory.mktemp("belt"), seed=0, width=448,
                    height=256, n_baseline=8, n_reference=4, n_empty=4, n_test=2)


def test_calibration_banks_the_empty_scenes_and_their_instances_become_background(belt,
                                                                                  tmp_path):
    from pasta_ros.core.calibration import calibrate
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.model_io import load_model, save_model
    from pasta_ros.pipeline import PastaPipeline, build_extractor, uses_fused_graph
    from pasta_ros.sources import folder_source

    cfg = PastaConfig(input_width=448, input_height=256, clusters=8, device="cpu",
                      distractor_bank=True)
    ext = build_extractor(cfg)
    sets = (folder_source(belt.baseline), folder_source(belt.reference))
    model = calibrate(ext, *sets, folder_source(belt.empty), cfg, quiet=True)
    assert model.distractor_bank is not None
    assert model.stats["distractor_bank"] == model.distractor_bank.shape[0] >= 2
    assert model.distractor_bank.shape[1] == model.channels
    assert -1.0 <= model.distractor_threshold <= 1.0
    assert model.stats["distractor_threshold"] == pytest.approx(model.distractor_threshold,
                                                                abs=1e-4)
    assert model.stats["distractor_bank_found"] >= model.stats["distractor_bank"]
    saved = load_model(save_model(model, tmp_path / "m"))
    np.testing.assert_array_equal(saved.distractor_bank, model.distractor_bank)
    assert saved.distractor_threshold == model.distractor_threshold
    assert not uses_fused_graph(cfg, saved)  # the bank needs the patch features
    without = calibrate(ext, *sets, folder_source(belt.empty),
                        cfg.replace(distractor_bank=False), quiet=True)
    assert without.distractor_bank is None
    assert calibrate(ext, *sets, None, cfg, quiet=True).distractor_bank is None

    # the empty scenes the bank was built from: each kept entry's instance meets it (cosine 1)
    with_bank = PastaPipeline.load(tmp_path / "m", cfg)
    save_model(without, tmp_path / "w")
    no_bank = PastaPipeline.load(tmp_path / "w", cfg)
    shown = kept = 0
    for _, image in folder_source(belt.empty)():
        shown += len(no_bank.process(image).instances)
        kept += len(with_bank.process(image).instances)
    assert shown > 0  # the empty scenes do show objects to the segmenter: labels, dirt
    assert kept <= shown - model.distractor_bank.shape[0]
