"""Each iCAS prompting mode end to end on a tiny synthetic case, bad input, evaluation, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel, default_arch, save_checkpoint
from pasta_ros.core.icas.prompting import ICASPredictor, area_mask
from pasta_ros.data.icas_synth import defect_image, sample_style, write_benchmark
from pasta_ros.evaluation_icas import evaluate

SIZE = 64


def tiny_arch(**kw):
    """A small decoder over a random-init EfficientNet-Lite0 at 64x64 (fast on CPU)."""
    cfg = {"layers": 1, "queries": 8, "hidden": 32, "mask_dim": 16, "ffn": 64} | kw
    return default_arch(tiny=True, input_size=(SIZE, SIZE), **cfg)



@pytest.fixture(scope="module")
def model() -> ICASModel:
    torch.manual_seed(0)
    return ICASModel(tiny_arch()).eval()


@pytest.fixture(scope="module")
def images() -> dict:
    rng = np.random.default_rng(0)
    style = sample_style(rng, "spot", ("brick",))
    to_u8 = lambda im: (im * 255).astype(np.uint8)  # noqa: E731
    bad = [defect_image(rng, "gravel", style, SIZE, 2) for _ in range(2)]
    normal = [to_u8(defect_image(rng, "gravel", style, SIZE)[0]) for _ in range(3)]
    return {"bad": [to_u8(i) for i, _ in bad], "masks": [m for _, m in bad], "normal": normal}


def _check(res, shape) -> None:
    assert res.score.shape == shape and res.score.dtype == np.float32
    assert res.mask.dtype == bool and res.mask.shape == shape
    assert 0.0 <= res.score.min() and res.score.max() <= 1.0


def test_each_prompting_mode(model: ICASModel, images: dict) -> None:
    pred = ICASPredictor(model)
    img, mask = images["bad"][0], images["masks"][0]
    pred.set_normal_prompt(images["normal"])
    res = pred.predict(images["bad"][1])
    assert res.mode == "normal"
    _check(res, (SIZE, SIZE))
    pred.set_anomaly_prompt(img, mask)
    assert pred.predict(images["bad"][1]).mode == "both"
    _check(pred.predict(images["bad"][1], mode="anomaly"), (SIZE, SIZE))
    pred.clear("normal")
    ys, xs = np.nonzero(mask)
    pred.set_interactive_prompt(img, points=[(xs[0], ys[0])], boxes=[(0, 0, 5, 5)])
    res = pred.predict(img)
    assert res.mode == "anomaly"
    _check(res, (SIZE, SIZE))
    # Images of another size are resized in and the map comes back at their size.
    _check(pred.predict(np.ascontiguousarray(img[:, :48])), (SIZE, 48))
    pred.clear()
    with pytest.raises(PastaError, match="no prompt"):
        pred.predict(img)


def test_area_mask() -> None:
    m = area_mask((20, 30), points=[(5, 5)], boxes=[(10, 12, 20, 15)], radius=2)
    assert m[5, 5] == 1 and m[5, 8] == 0 and m[13, 15] == 1 and m.sum() == 13 + 44
    with pytest.raises(PastaError, match="inside"):
        area_mask((20, 30), points=[(100, 100)])


def test_bad_prompts(model: ICASModel, images: dict, tmp_path: Path) -> None:
    pred = ICASPredictor(model)
    img, mask = images["bad"][0], images["masks"][0]
    pred.set_anomaly_prompt(img, mask)
    kept = pred.anomaly
    with pytest.raises(PastaError, match="same size"):
        pred.set_anomaly_prompt(img, mask[:-1])
    with pytest.raises(PastaError, match="empty prompt mask"):
        pred.set_anomaly_prompt(img, np.zeros_like(mask))
    with pytest.raises(PastaError, match="zero shots"):
        pred.set_normal_prompt([])
    other = ICASModel(tiny_arch()).eval()
    other.arch = tiny_arch().__class__(other.arch.backbone, other.arch.decoder, (96, 96), True)
    foreign = ICASPredictor(other).encode_anomaly_prompt(img, mask)
    with pytest.raises(PastaError, match="96x96.*64x64"):
        pred.set_prompt(foreign)
    ckpt = save_checkpoint(tmp_path / "l2.pt", ICASModel(tiny_arch(layers=2)), stage="anomaly",
                           step=0)
    with pytest.raises(PastaError, match="another architecture"):
        pred.load_checkpoint(str(ckpt))
    assert pred.anomaly is kept and pred.model is model  # nothing already loaded is lost
    assert pred.predict(img).mode == "anomaly"


def test_evaluate_and_cli(model: ICASModel, tmp_path: Path) -> None:
    root = tmp_path / "cats" / "gravel_spot"
    write_benchmark(root, "gravel", "spot", seed=0, size=SIZE, n_reference=2, n_test=5)
    res = evaluate(model, [root], seeds=[0, 1], shots=(2,))
    for m in ("icas_anomaly_prompt", "gqs_mfm_anomaly_prompt", "icas_interactive"):
        miou, std = res["segmentation"][m]["miou"]
        assert 0 <= miou <= 100 and std >= 0
    assert set(res["auroc"]["k2"]) == {"icas", "patch_knn", "gqs_mfm", "patch_knn_agg",
                                       "gqs_mfm_agg", "icas_tta", "icas_fused"}

    from pasta_ros.cli import main
    ckpt = save_checkpoint(tmp_path / "m.pt", model, stage="anomaly", step=0)
    out = tmp_path / "seg"
    assert main(["-q", "icas", "segment", "--checkpoint", str(ckpt), "--images",
                 str(root / "test/images"), "--normal", str(root / "reference"), "--shots", "2",
                 "--prompt-image", str(root / "test/images/000.png"), "--points", "10,10",
                 "--out", str(out)]) == 0
    assert len(list(out.glob("*_mask.png"))) == 5
    assert main(["-q", "icas", "evaluate", "--checkpoint", str(ckpt), "--data",
                 str(tmp_path / "cats"), "--seeds", "0", "--shots", "2", "--json",
                 str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["categories"] == ["gravel_spot"] and res["input_size"] == [SIZE, SIZE]
    assert main(["-q", "icas", "evaluate", "--checkpoint", str(ckpt), "--data",
                 str(tmp_path / "cats"), "--seeds", "0", "--shots", "2", "--calib-defects", "0",
                 "--tta-copies", "0", "--input-size", "96x96", "--json",
                 str(tmp_path / "r96.json")]) == 0
    res = json.loads((tmp_path / "r96.json").read_text())
    assert res["input_size"] == [96, 96] and "patch_knn_agg" in res["auroc"]["k2"]
    assert main(["icas", "segment", "--checkpoint", str(tmp_path / "nope.pt"), "--images",
                 str(root), "--out", str(out)]) == 2
