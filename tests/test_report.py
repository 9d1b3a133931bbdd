"""`pasta report` on a tiny set writes every file: report.md with its tables, the figures
(Fig. 1, Fig. 6, Fig. 7) as PNGs, and report.json with one row per (method, setting, seed)."""

from __future__ import annotations

import json

import cv2
import pytest

from pasta_ros.evaluation_report import ReportPlan


def test_plan_puts_the_default_setting_first_and_sweeps_the_rest():
    from pasta_ros.core.config import PastaConfig

    cfg = PastaConfig(clusters=8, waw_k_sphere=3, waw_k_v=2)
    plan = ReportPlan(("pasta", "waw"), (0, 1), (6, 8), (2, 3), (2, 4))
    assert plan.settings("pasta", cfg) == [{"clusters": 8}, {"clusters": 6}]
    waw = plan.settings("waw", cfg)
    assert waw[0] == {"waw_k_sphere": 3, "waw_k_v": 2} and len(waw) == 4
    assert len({tuple(s.values()) for s in waw}) == 4


@pytest.fixture(scope="module")
def tiny_plants(tmp_path_factory):
    from pasta_ros.data.synth import generate

    return generate("plants", tmp_path_factory.mktemp("report_plants"), seed=0, width=224,
                    height=128, n_baseline=8, n_reference=6, n_empty=2, n_test=4)


def test_report_writes_every_file(run_cli, tiny_plants, tmp_path):
    out = tmp_path / "R"
    code, stdout, err = run_cli([
        "-q", "report", "--data", tiny_plants.root, "--out", out, "--seeds", "0,1",
        "--methods", "pasta,waw", "--clusters", "6", "--waw-k-sphere", "3", "--waw-k-v", "3",
        "--k-sphere-list", "2,3", "--k-v-list", "2,3", "--input-size", "224x128",
        "--device", "cpu", "--backend", "torch"])
    assert code == 0, err
    figures = ["fig1_pasta_distributions.png", "fig6_iou_vs_ksphere.png",
               "fig7_anomaly_iou_heatmap.png"]
    assert json.loads(stdout)["figures"] == figures
    for name in figures:
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    md = (out / "report.md").read_text()
    for heading in ("Table II style", "Table III style", "Evaluation A", "Instance metrics",
                    "sweeps"):
        assert heading in md
    assert all(f"]({name})" in md for name in figures)
    data = json.loads((out / "report.json").read_text())
    # pasta: 1 setting x 2 seeds; waw: 4 settings x 2 seeds (seed-free: one run each)
    assert len(data["runs"]) == 2 + 4 * 2
    waw_rows = [r for r in data["summary"] if r["method"] == "waw"]
    assert len(waw_rows) == 4 and all(r["seed_free"] for r in waw_rows)
    cost = {r["method"]: r for r in data["summary"]}
    assert cost["pasta"]["features"] > cost["waw"]["features"] > 0
    assert all(r["calibration_s"] > 0 for r in data["summary"])


def test_report_with_an_unknown_method_exits_2(run_cli, tiny_plants, tmp_path):
    code, stdout, err = run_cli(["-q", "report", "--data", tiny_plants.root, "--out",
                                 tmp_path / "R", "--methods", "pasta,nope"])
    assert code == 2 and err.startswith("error: unknown method(s) nope; available: pasta")
