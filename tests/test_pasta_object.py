"""The object-level PASTA variant: shape descriptors on hand-made masks, pooled features, and
`pasta calibrate --method pasta_object` end to end on a tiny plants set."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from pasta_ros.core.object_descriptors import instance_descriptors, shape_features


def test_shape_of_a_disc_a_bar_and_an_l():
    disc = np.zeros((41, 41), np.uint8)
    cv2.circle(disc, (20, 20), 15, 1, -1)
    bar = np.zeros((41, 41), np.uint8)
    bar[18:23, 2:39] = 1
    ell = np.zeros((41, 41), np.uint8)
    ell[5:35, 5:12] = 1
    ell[28:35, 5:35] = 1
    d, b, el = (shape_features(m.astype(bool)) for m in (disc, bar, ell))
    assert d[0] == pytest.approx(np.log(disc.sum()))
    assert d[1] < 0.1 < 0.5 < b[1], "a disc is round, a 5x37 bar elongated"
    assert d[2] > 0.95 and b[2] > 0.95 and el[2] < 0.7, "an L is far from convex"
    assert el[3] > 0 and shape_features(np.zeros((5, 5), bool)).tolist() == [0, 0, 0, 0]


def test_pooled_features_are_the_mean_over_each_instance():
    feats = torch.zeros(2, 2, 2)
    feats[0, :, 0] = 1.0   # left column points along channel 0
    feats[1, :, 1] = 1.0   # right column along channel 1
    ids = np.zeros((4, 4), np.int32)
    ids[:, :2] = 1
    ids[:, 2:] = 2
    pooled, shapes = instance_descriptors(feats, ids)
    np.testing.assert_allclose(pooled, [[1, 0], [0, 1]], atol=1e-6)
    assert shapes.shape == (2, 4)


def test_calibrate_and_evaluate_pasta_object(run_cli, tiny_steel, tmp_path):
    out = tmp_path / "m"
    code, stdout, err = run_cli(["-q", "calibrate", "--method", "pasta_object", "--baseline",
                                 tiny_steel.baseline, "--reference", tiny_steel.reference,
                                 "--empty", tiny_steel.empty, "--out", out, "--input-size",
                                 "224x128", "--clusters", "8", "--pasta-object-clusters", "4",
                                 "--device", "cpu", "--backend", "torch"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["baseline_objects"] >= 4 and summary["model_id"].startswith("pasta_object-")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "pasta_object"
    code, stdout, err = run_cli(["-q", "evaluate", "--model", out, "--test", tiny_steel.root,
                                 "--backend", "torch", "--device", "cpu"])
    assert code == 0, err
    assert json.loads(stdout)["iou_target"] > 10
