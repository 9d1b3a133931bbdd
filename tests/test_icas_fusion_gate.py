"""The icas_fused gate with a margin (issue #10): a component joins the anchors only when its
calibration AUROC beats theirs by more than z standard errors; values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pasta_ros.core.errors import PastaError
from pasta_ros.core.score_fusion import auroc_se, calibrate_fusion

# anchor: normal 0..3, defects 1.5..4.5 -> 13 of 16 pairs ordered, AUROC 0.8125;
# the 'decoder' orders all 16 (AUROC 1)
NORMAL = {"mfm": np.array([0.0, 1.0, 2.0, 3.0]), "icas": np.array([0.0, 0.1, 0.2, 0.3])}
DEFECTS = {"mfm": np.array([1.5, 2.5, 3.5, 4.5]), "icas": np.array([1.0, 1.1, 1.2, 1.3])}


def test_hanley_mcneil_se_by_hand() -> None:
    # a = 0.8125, n = m = 4: Q1 = a/(2-a) = 0.684211, Q2 = 2a^2/(1+a) = 0.728448,
    # var = (a(1-a) + 3(Q1-a^2) + 3(Q2-a^2)) / 16 = 0.429385 / 16 = 0.026837
    assert auroc_se(0.8125, 4, 4) == pytest.approx(np.sqrt(0.429385 / 16), abs=1e-6)
    assert auroc_se(1.0, 8, 16) == 0.0  # a perfect separation has no spread
    assert np.isnan(auroc_se(0.7, 0, 4)) and np.isnan(auroc_se(float("nan"), 4, 4))


@pytest.mark.parametrize("z,weight", [(0.0, 1.0),  # (1 - 0.8125) / (1 - 0.8125)
                                      (1.0, (1 - 0.8125 - 0.163820) / 0.1875),  # 0.1263
                                      (2.0, 0.0),  # bar 1.1401 > 1: cannot be beaten
                                      (float("inf"), 0.0)])  # anchors only
def test_the_margin_keeps_a_component_out_unless_it_wins_by_more(z, weight) -> None:
    w = calibrate_fusion(NORMAL, DEFECTS, "mfm", margin_z=z)
    assert w.calib_auroc["anchor"] == 0.8125 and w.calib_auroc["icas"] == 1.0
    assert w.weight["mfm"] == 1.0
    assert w.weight["icas"] == pytest.approx(weight, abs=1e-5)


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(PastaError, match="margin"):
        calibrate_fusion(NORMAL, DEFECTS, "mfm", margin_z=-1.0)


def test_cli_refuses_a_negative_margin(tmp_path, capsys) -> None:
    from pasta_ros.cli import main
    from pasta_ros.data.icas_synth import write_benchmark

    write_benchmark(tmp_path / "gravel_spot", "gravel", "spot", seed=0, size=32, n_reference=2,
                    n_test=3)
    assert main(["-q", "icas", "evaluate", "--data", str(tmp_path / "gravel_spot"),
                 "--fusion-margin", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "margin" in err[0]
