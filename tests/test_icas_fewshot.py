"""Few-shot anomaly detection on labels-only sets: the ELPV-style layout, seeded shot drawing,
the shot-calibrated score fusion, labels-only evaluation and its bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pasta_ros.cli import main
from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel, default_arch, save_checkpoint
from pasta_ros.core.score_fusion import auroc, calibrate_fusion, fuse_scores
from pasta_ros.data.icas_synth import paste_defects, write_benchmark
from pasta_ros.data.labels_layout import read_elpv_labels, split_few_shot, write_few_shot_layout
from pasta_ros.evaluation_icas import evaluate
from pasta_ros.evaluation_icas_fewshot import FewShotOptions, draw_shots

SIZE = 64


@pytest.fixture(scope="module")
def model() -> ICASModel:
    torch.manual_seed(0)
    arch = default_arch(tiny=True, input_size=(SIZE, SIZE), layers=1, queries=8, hidden=32,
                        mask_dim=16, ffn=64)
    return ICASModel(arch).eval()


def _labels_only(tmp_path: Path, name: str = "gravel_spot", n_reference: int = 3) -> Path:
    root = tmp_path / "sets" / name
    write_benchmark(root, "gravel", "spot", seed=0, size=SIZE, n_reference=n_reference,
                    n_test=6)
    shutil.rmtree(root / "test" / "masks")
    return root


# ----------------------------------------------------------------------------- layout


def _fake_elpv(tmp_path: Path) -> Path:
    """A labels.csv in the ELPV format over 40 gray 16x16 PNGs of two types."""
    (tmp_path / "elpv" / "images").mkdir(parents=True)
    rows = []
    for i in range(40):
        name = f"images/cell{i:04d}.png"
        cv2.imwrite(str(tmp_path / "elpv" / name), np.full((16, 16), i, np.uint8))
        prob = (0.0, 1.0, 0.3333333333333333, 0.0, 1.0)[i % 5]
        rows.append(f"{name}  {prob}  {'mono' if i % 4 else 'poly'}")
    (tmp_path / "elpv" / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "elpv" / "labels.csv"


def test_elpv_layout_split_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    items = read_elpv_labels(_fake_elpv(tmp_path), "mono")
    assert items and all(x.group == "mono" and x.label in (0, 1) for x in items)
    assert all(int(x.path.stem[4:]) % 5 != 2 for x in items)  # probability 1/3 left out
    a, b = split_few_shot(items, seed=0), split_few_shot(items, seed=0)
    assert a == b and split_few_shot(items, seed=1) != a
    parts = [{x.path for x in p} for p in (a.pool, a.dev, a.heldout)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    normals = [x for x in items if x.label == 0]
    assert len(a.pool) == round(0.75 * len(normals)) and all(x.label == 0 for x in a.pool)
    assert {x.path for x in items if x.label == 1} <= parts[1] | parts[2]
    counts = write_few_shot_layout(a, tmp_path / "out", seed=0)
    assert counts["dev_anomalous"] + counts["heldout_anomalous"] == len(items) - len(normals)
    assert len(list((tmp_path / "out/heldout/reference").glob("*.png"))) == len(a.pool)
    split = json.loads((tmp_path / "out/split.json").read_text())
    assert set(split["dev"]).isdisjoint(split["heldout"])


def test_shot_drawing_is_seeded(tmp_path: Path) -> None:
    draw = lambda s: draw_shots(20, 4, np.random.default_rng([s, 0, 4]))  # noqa: E731
    assert draw(0) == draw(0) and draw(0) != draw(1) and len(set(draw(0))) == 4
    with pytest.raises(PastaError, match="4 shots requested but reference/ holds 3"):
        draw_shots(3, 4, np.random.default_rng(0))


# ----------------------------------------------------------------------------- fusion


@pytest.mark.parametrize("seed", range(12))
def test_fusion_with_a_random_decoder_never_falls_below_the_anchor(seed: int) -> None:
    """MFM separates the calibration defects; the 'decoder' is noise: weight 0, and on a
    test set the fused AUROC equals MFM's (the fused score is MFM's, standardised)."""
    rng = np.random.default_rng(seed)
    mfm = lambda n, shift: rng.normal(shift, 1.0, n)  # noqa: E731
    normal = {"gqs_mfm": mfm(8, 0.0), "icas": rng.random(8)}
    anomalous = {"gqs_mfm": mfm(16, 3.0), "icas": rng.random(16)}
    w = calibrate_fusion(normal, anomalous, anchors="gqs_mfm")
    assert w.weight["gqs_mfm"] == 1.0 and w.weight["icas"] == 0.0
    test = {"gqs_mfm": np.concatenate([mfm(50, 0.0), mfm(50, 1.0)]), "icas": rng.random(100)}
    truth = np.r_[np.zeros(50), np.ones(50)]
    fused = fuse_scores(test, w)
    assert auroc(fused[truth == 0], fused[truth == 1]) == pytest.approx(
        auroc(test["gqs_mfm"][:50], test["gqs_mfm"][50:]))


def test_fusion_mixes_in_a_component_that_beats_the_anchor() -> None:
    rng = np.random.default_rng(0)
    normal = {"gqs_mfm": rng.normal(0, 1, 20), "icas": rng.normal(0, 1, 20)}
    anomalous = {"gqs_mfm": rng.normal(0.8, 1, 40), "icas": rng.normal(4, 1, 40)}
    w = calibrate_fusion(normal, anomalous, anchors="gqs_mfm", margin_z=0.0)
    assert w.calib_auroc["icas"] > w.calib_auroc["gqs_mfm"] and w.weight["icas"] > 0.5
    # with the default margin (2 standard errors of the anchor's 0.82) a clear winner still
    # joins, with less weight
    assert 0 < calibrate_fusion(normal, anomalous, anchors="gqs_mfm").weight["icas"] < 0.5
    with pytest.raises(PastaError, match="anchors"):
        calibrate_fusion(normal, anomalous, anchors="patch_knn")


def test_paste_defects_changes_only_the_masked_area() -> None:
    image = np.full((40, 56, 3), 128, np.uint8)
    out, mask = paste_defects(np.random.default_rng(3), image, 2)
    assert out.shape == image.shape and mask.shape == (40, 56) and mask.any()
    changed = np.abs(out.astype(int) - image).max(-1) > 2
    assert changed[mask].mean() > 0.5 and changed[~mask].mean() < 0.2


# ----------------------------------------------------------------------------- evaluation


def test_labels_only_evaluation(model: ICASModel, tmp_path: Path) -> None:
    root = _labels_only(tmp_path, n_reference=4)
    res = evaluate(model, [root], seeds=[0, 1], shots=(2, 4),
                   options=FewShotOptions("flip", calib_defects=1))
    assert res["segmentation"] == {} and res["pixel_auroc"] == {}
    assert "labels only" in res["notes"][0]
    for k in ("k2", "k4"):
        assert set(res["auroc"][k]) == {"icas", "patch_knn", "gqs_mfm", "patch_knn_agg",
                                        "gqs_mfm_agg", "icas_tta", "icas_fused"}
        assert all(0 <= m <= 100 and s >= 0 for m, s in res["auroc"][k].values())
        assert res["fusion"][k]["weight"]["gqs_mfm_agg"] == [1.0, 0.0]
    again = evaluate(model, [root], seeds=[0, 1], shots=(2, 4),
                     options=FewShotOptions("flip", calib_defects=1))
    assert again["auroc"] == res["auroc"]  # seeded end to end
    out = tmp_path / "r.json"
    ckpt = save_checkpoint(tmp_path / "m.pt", model, stage="anomaly", step=0)
    assert main(["-q", "icas", "evaluate", "--checkpoint", str(ckpt), "--data", str(root),
                 "--seeds", "0", "--shots", "2", "--shot-augment", "dihedral", "--json",
                 str(out)]) == 0
    assert set(json.loads(out.read_text())["auroc"]["k2"]) >= {"icas_fused", "gqs_mfm"}


def _run_error(args: list[str], capsys) -> str:
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_few_shot_inputs(model: ICASModel, tmp_path: Path, capsys) -> None:
    ckpt = str(save_checkpoint(tmp_path / "m.pt", model, stage="anomaly", step=0))
    ev = ["icas", "evaluate", "--checkpoint", ckpt, "--seeds", "0", "--data"]
    root = _labels_only(tmp_path, "few", n_reference=2)
    assert "4 shots requested but reference/ holds 2" in _run_error(
        [*ev, str(root), "--shots", "4"], capsys)
    ref = sorted((root / "reference").glob("*.png"))[0]
    cv2.imwrite(str(ref), cv2.imread(str(ref), cv2.IMREAD_GRAYSCALE))  # one gray shot
    assert "mixed image channels" in _run_error([*ev, str(root), "--shots", "2"], capsys)
    cv2.imwrite(str(ref), np.zeros((SIZE + 8, SIZE, 3), np.uint8))
    assert "mixed image sizes" in _run_error([*ev, str(root), "--shots", "2"], capsys)
    leak = _labels_only(tmp_path, "leak")
    shutil.copy(leak / "test/images/000.png", leak / "reference/000.png")
    assert "disjoint" in _run_error([*ev, str(leak), "--shots", "2"], capsys)
    raw = torch.load(ckpt, weights_only=True)
    raw["arch"]["decoder"]["in_channels"] = 99
    torch.save(raw, tmp_path / "other.pt")
    msg = _run_error(["icas", "evaluate", "--checkpoint", str(tmp_path / "other.pt"),
                      "--data", str(leak), "--shots", "2"], capsys)
    assert "channels" in msg and "99" in msg


def test_local_aggregate_is_the_neighbourhood_mean() -> None:
    from pasta_ros.evaluation_icas_fewshot import local_aggregate

    f = torch.zeros(1, 2, 5, 5)
    f[0, 0, 2, 2] = 9.0
    f[0, 1, 0, 0] = 4.0
    out = local_aggregate(f)
    assert out.shape == f.shape
    assert torch.allclose(out[0, 0, 1:4, 1:4], torch.ones(3, 3)) and out[0, 0, 0].abs().sum() == 0
    assert out[0, 1, 0, 0] == pytest.approx(1.0)  # corner: mean of its 4 cells inside the grid
    assert out[0, 1, 1, 1] == pytest.approx(4.0 / 9)


def test_elpv_layout_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "elpv_layout.py"
    env = {"PYTHONPATH": str(script.parents[1]), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    ok = run("--labels", str(_fake_elpv(tmp_path)), "--out", str(tmp_path / "o"))
    assert ok.returncode == 0, ok.stderr
    counts = json.loads(ok.stdout)
    assert counts["pool_normal"] == len(list((tmp_path / "o/dev/reference").glob("*.png")))
    bad = run("--labels", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o2"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "not found" in bad.stderr
