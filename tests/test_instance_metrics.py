"""Instance precision / recall / F1 and PQ = SQ x RQ against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from pasta_ros.core.instance_metrics import InstanceScores, gt_instances_from_classes

GT_IDS = np.array([[1, 1, 0, 2, 2, 0],
                   [1, 1, 0, 2, 2, 0],
                   [0, 0, 0, 0, 0, 0]], np.int32)
GT_LABELS = np.where(GT_IDS == 1, 1, np.where(GT_IDS == 2, 2, 0)).astype(np.uint8)
PRED_IDS = np.array([[1, 1, 0, 2, 0, 0],
                     [1, 0, 0, 2, 0, 0],
                     [1, 0, 0, 0, 0, 3]], np.int32)
PRED_CLS = np.array([0, 1, 2, 2], np.uint8)


def test_hand_computed_pq_one_image():
    s = InstanceScores()
    s.add(GT_IDS, GT_LABELS, PRED_IDS, PRED_CLS)
    r = s.result()
    # target: pred 1 vs GT 1: intersection 3, union 5 -> IoU 0.6, a TP
    assert (r["instance_tp_target"], r["instance_fp_target"], r["instance_fn_target"]) == (1, 0, 0)
    assert r["sq_target"] == pytest.approx(60.0)
    assert r["rq_target"] == pytest.approx(100.0)
    assert r["pq_target"] == pytest.approx(60.0)
    # anomaly: pred 2 vs GT 2: 2 / 4 = 0.5 -> TP at IoU >= 0.5; pred 3 is a FP
    counts = (r["instance_tp_anomaly"], r["instance_fp_anomaly"], r["instance_fn_anomaly"])
    assert counts == (1, 1, 0)
    assert r["sq_anomaly"] == pytest.approx(50.0)
    assert r["rq_anomaly"] == pytest.approx(100 / 1.5)
    assert r["pq_anomaly"] == pytest.approx(50.0 / 1.5)
    assert r["instance_precision_anomaly"] == pytest.approx(50.0)
    assert r["instance_recall_anomaly"] == pytest.approx(100.0)
    assert r["instance_f1_anomaly"] == pytest.approx(200 / 3)


def test_counts_accumulate_over_images_and_a_missed_instance_is_a_fn():
    s = InstanceScores()
    s.add(GT_IDS, GT_LABELS, PRED_IDS, PRED_CLS)
    missed = np.zeros((3, 6), np.int32)
    missed[2, :3] = 1
    s.add(missed, (missed * 2).astype(np.uint8), np.zeros((3, 6), np.int32), np.zeros(1, np.uint8))
    r = s.result()
    assert r["instance_fn_anomaly"] == 1
    assert r["rq_anomaly"] == pytest.approx(50.0)  # 1 / (1 + 1/2 + 1/2)
    assert r["pq_anomaly"] == pytest.approx(25.0)
    assert r["instance_recall_anomaly"] == pytest.approx(50.0)


def test_wrong_class_is_a_fp_and_a_fn():
    s = InstanceScores()
    cls = np.array([0, 2, 2, 2], np.uint8)  # the target predicted as an anomaly
    s.add(GT_IDS, GT_LABELS, PRED_IDS, cls)
    r = s.result()
    assert (r["instance_tp_target"], r["instance_fn_target"]) == (0, 1)
    assert r["pq_target"] == 0.0
    assert r["instance_fp_anomaly"] == 2


def test_ground_truth_slivers_under_min_area_are_ignored():
    gt = np.zeros((10, 10), np.int32)
    gt[0:5, 0:5] = 1      # 25 px target
    gt[8, 8] = 2          # a 1-px sliver of an occluded target
    labels = (gt > 0).astype(np.uint8)
    pred = np.zeros((10, 10), np.int32)
    pred[0:5, 0:5] = 1
    pred[8, 8] = 2        # a prediction lying on the ignored sliver: not a FP
    s = InstanceScores(min_area=4)
    s.add(gt, labels, pred, np.array([0, 1, 1], np.uint8))
    r = s.result()
    assert (r["instance_tp_target"], r["instance_fp_target"], r["instance_fn_target"]) == (1, 0, 0)


def test_fallback_instances_are_connected_components_per_class():
    labels = np.array([[1, 1, 2, 0, 1],
                       [0, 0, 2, 0, 1]], np.uint8)
    ids = gt_instances_from_classes(labels)
    assert ids.max() == 3  # two target components, one anomaly component
    assert len(np.unique(ids[labels == 2])) == 1
    assert ids[0, 0] == ids[0, 1] != ids[0, 4]
