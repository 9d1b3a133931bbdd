"""AUPRO (per-region overlap up to 30 % FPR) computed by hand on tiny masks (issue #10)."""

from __future__ import annotations

import numpy as np
import pytest

from pasta_ros.core.metrics import aupro

# image A: a 2-pixel region; image B: a 1-pixel region; 5 normal pixels. Scores sorted:
# 0.9 (A, region 1), 0.8 (B, region 2), 0.5 0.4 0.3 (normal), 0.2 (A, region 1), 0.1 0.0
# (normal). Each region pixel adds 1 / (size * 2 regions) to PRO, each normal pixel 1/5 to
# FPR: (0, 0) (0, .25) (0, .75) (.2, .75) (.4, .75) (.6, .75) (.6, 1) (.8, 1) (1, 1).
MASKS = [np.array([[1, 1, 0, 0]], bool), np.array([[0, 0, 0, 1]], bool)]
SCORES = [np.array([[0.9, 0.2, 0.5, 0.1]]), np.array([[0.3, 0.0, 0.4, 0.8]])]


def test_aupro_by_hand() -> None:
    # up to FPR 0.3: .2 * .75 + .1 * .75 = .225, / .3 = .75
    assert aupro(MASKS, SCORES) == pytest.approx(0.75)
    # whole curve: .6 * .75 + .4 * 1 = .85
    assert aupro(MASKS, SCORES, fpr_limit=1.0) == pytest.approx(0.85)
    # limit .1 falls inside the first flat segment: .75 throughout
    assert aupro(MASKS, SCORES, fpr_limit=0.1) == pytest.approx(0.75)


def test_aupro_weighs_regions_not_pixels() -> None:
    # one big region found, one small region missed: PRO .5 (pixel recall would be 4/5)
    masks = [np.array([[1, 1, 1, 1, 0, 0, 1]], bool)]
    scores = [np.array([[0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.0]])]
    assert aupro(masks, scores) == pytest.approx(0.5)
    # ties are one threshold: a map that is constant everywhere has PRO = FPR (diagonal)
    flat = [np.zeros((1, 7))]
    assert aupro(masks, flat, fpr_limit=1.0) == pytest.approx(0.5)


def test_aupro_bad_input() -> None:
    assert np.isnan(aupro([np.zeros((2, 2), bool)], [np.zeros((2, 2))]))  # no region
    assert np.isnan(aupro([np.ones((2, 2), bool)], [np.zeros((2, 2))]))  # no normal pixel
    with pytest.raises(ValueError, match="same size"):
        aupro(MASKS, SCORES[:1])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(MASKS, SCORES, fpr_limit=0.0)


def test_evaluate_reports_aupro_where_masks_exist(tmp_path) -> None:
    import shutil

    import torch

    from pasta_ros.core.icas.model import ICASModel, default_arch
    from pasta_ros.data.icas_synth import write_benchmark
    from pasta_ros.evaluation_icas import evaluate
    from pasta_ros.evaluation_icas_fewshot import FewShotOptions

    torch.manual_seed(0)
    model = ICASModel(default_arch(tiny=True, input_size=(48, 48), layers=1, queries=8,
                                   hidden=32, mask_dim=16, ffn=64)).eval()
    masked, labels_only = tmp_path / "m" / "gravel_spot", tmp_path / "l" / "gravel_spot"
    for root in (masked, labels_only):
        write_benchmark(root, "gravel", "spot", seed=0, size=48, n_reference=4, n_test=6)
    shutil.rmtree(labels_only / "test" / "masks")
    opts = FewShotOptions(calib_defects=0)
    res = evaluate(model, [masked], seeds=[0], shots=(4,), options=opts)
    mean, std = res["aupro"]["k4"]["icas"]
    assert 0 <= mean <= 100 and std == 0
    res = evaluate(model, [labels_only], seeds=[0], shots=(4,), options=opts)
    assert res["aupro"] == {} and "AUPRO" in res["notes"][0]
