"""Calibration self-checks (issue 9): each triggered by a hand-made calibration."""

from __future__ import annotations

import numpy as np

from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.self_checks import calibration_checks

# clusters: 0 background, 1-3 targets, 4 anomaly (ratio 0.0)
BASE = np.array([0.50, 0.15, 0.15, 0.10, 0.10])
REF = np.array([0.55, 0.15, 0.15, 0.15, 0.00])
EMPTY = np.array([0.60, 0.10, 0.10, 0.10, 0.10])  # only read by the background check


def _model(p_base=BASE, p_ref=REF, anomaly=(0, 0, 0, 0, 1), background=(1, 0, 0, 0, 0),
           p_empty=None, n_base=40, n_ref=20, k=5) -> CalibratedModel:
    return CalibratedModel(
        backbone="efficientnet_lite0", weights_hash="", input_size=(64, 64), stride=8,
        centers=np.zeros((k, 4), np.float32), p_baseline=np.asarray(p_base, float),
        p_reference=np.asarray(p_ref, float), anomaly=np.asarray(anomaly, bool),
        background=np.asarray(background, bool), color_log_odds=np.zeros(4096, np.float32),
        ratio_threshold=0.05, vote_threshold=0.1, seed=0,
        p_empty=None if p_empty is None else np.asarray(p_empty, float),
        stats={"baseline_images": n_base, "reference_images": n_ref})


def _codes(model, clusters=None) -> list[str]:
    return [c.code for c in calibration_checks(model, clusters)]


def test_a_healthy_calibration_passes_every_check():
    empty = np.array([0.9, 0.025, 0.025, 0.025, 0.025])
    assert _codes(_model(p_empty=empty)) == []


def test_no_anomaly_cluster():
    checks = calibration_checks(_model(anomaly=(0, 0, 0, 0, 0), p_ref=BASE))
    assert [c.code for c in checks] == ["no_anomaly_cluster"]
    assert "--clusters" in checks[0].message


def test_thin_margin_near_the_threshold():
    ref = REF.copy()
    ref[4] = 0.006  # ratio 0.06: not an anomaly, but close to 0.05
    checks = calibration_checks(_model(p_ref=ref, anomaly=(0, 0, 0, 0, 0)))
    assert "thin_margin" in [c.code for c in checks]
    assert "0.060" in next(c.message for c in checks if c.code == "thin_margin")


def test_reference_apparently_contains_anomalies():
    base = np.array([0.50, 0.15, 0.15, 0.18, 0.02])
    ref = np.array([0.50, 0.15, 0.15, 0.12, 0.08])  # cluster 4: 8% of ref, 2% of baseline
    empty = np.array([0.9, 0.05, 0.05, 0.0, 0.0])
    codes = _codes(_model(p_base=base, p_ref=ref, anomaly=(0, 0, 0, 0, 0), p_empty=empty))
    assert "reference_contains_anomalies" in codes


def test_too_few_images_for_k():
    assert _codes(_model(n_base=12, n_ref=20), clusters=20) == ["too_few_images"]
    assert _codes(_model(n_base=40, n_ref=6), clusters=20) == ["too_few_images"]


def test_background_cluster_that_covers_objects():
    empty = np.array([0.30, 0.10, 0.10, 0.10, 0.40])  # background is 0.5 of the baseline
    assert "background_covers_objects" in _codes(_model(p_empty=empty))
