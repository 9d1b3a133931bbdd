"""The test-time adaptation head (core/icas/tta.py), its EL-like defects
(data/icas_el_defects.py) and its place in the fusion gate: hand-made features, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pasta_ros.cli import main
from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.tta import TTAConfig, cell_cover, fit_head
from pasta_ros.core.score_fusion import auroc, calibrate_fusion, fuse_scores
from pasta_ros.data.icas_el_defects import EL_DEFECTS, el_defect, paste_el_defects
from pasta_ros.data.icas_synth import write_benchmark

C, GRID, PIX = 6, 8, 32  # channels, feature grid, image side (4 pixels per cell)


def _normal(g: torch.Generator) -> torch.Tensor:
    return 0.5 * torch.randn(1, C, GRID, GRID, generator=g)


def _defect(f: torch.Tensor, y: int, x: int) -> tuple[torch.Tensor, np.ndarray]:
    """A 2x2-cell defect at cell (y, x): channel 0 raised by 4; its pixel mask."""
    f = f.clone()
    f[0, 0, y:y + 2, x:x + 2] += 4.0
    mask = np.zeros((PIX, PIX), bool)
    mask[4 * y:4 * y + 8, 4 * x:4 * x + 8] = True
    return f, mask


def _fit_case(seed: int, config: TTAConfig) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shots = [_normal(g) for _ in range(3)]
    copies = [[_defect(s, int(y), int(x)) for y, x in ((1, 1), (4, 5))] for s in shots]
    return fit_head(shots, copies, config), g


@pytest.mark.parametrize("config", [TTAConfig(agg=1, knn=False),
                                    TTAConfig(agg=1, knn=True, residual=True, l2=0.01),
                                    TTAConfig(agg=1, residual=True, squares=True, l2=0.01)])
def test_the_head_finds_a_hand_made_defect(config: TTAConfig) -> None:
    head, g = _fit_case(0, config)
    normal = [_normal(g) for _ in range(6)]
    bad = [_defect(_normal(g), 3, 2)[0] for _ in range(6)]
    assert auroc([head.score(f) for f in normal], [head.score(f) for f in bad]) == 1.0
    logits = head.cell_logits(bad[0])
    assert logits.shape == (GRID, GRID)
    assert logits[3:5, 2:4].min() > logits[:, 5:].max()  # the defect cells, not elsewhere
    # the channel that carries it weighs most (its residual, or its square)
    assert head.weight.abs().argmax() % C == 0


def test_the_head_is_deterministic() -> None:
    a, _ = _fit_case(1, TTAConfig(agg=3, residual=True, max_negatives=100, seed=3))
    b, _ = _fit_case(1, TTAConfig(agg=3, residual=True, max_negatives=100, seed=3))
    assert torch.equal(a.weight, b.weight) and a.bias == b.bias
    c, _ = _fit_case(1, TTAConfig(agg=3, residual=True, max_negatives=100, seed=4))
    assert not torch.equal(a.weight, c.weight)  # the negatives drawn depend on the seed


def test_cell_cover_is_the_area_fraction() -> None:
    mask = np.zeros((PIX, PIX), bool)
    mask[0:4, 0:2] = True  # half of cell (0, 0)
    cover = cell_cover(mask, (GRID, GRID))
    assert cover[0] == 0.5 and cover[1:].sum() == 0


def test_bad_head_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    shot = _normal(g)
    with pytest.raises(PastaError, match=">= 2 shots"):
        fit_head([shot], [[_defect(shot, 1, 1)]], TTAConfig(knn=True))
    with pytest.raises(PastaError, match="no defect cells"):
        fit_head([shot], [[(shot, np.zeros((PIX, PIX), bool))]], TTAConfig(knn=False))
    with pytest.raises(PastaError, match="odd"):
        TTAConfig(agg=2)


@pytest.mark.parametrize("kind", EL_DEFECTS)
def test_el_defects_only_darken_and_are_seeded(kind: str) -> None:
    image = np.full((40, 56, 3), 200, np.uint8)
    image[:, ::7] = 120  # fingers
    out, mask = paste_el_defects(np.random.default_rng(5), image, 2, kinds=(kind,))
    again, mask2 = paste_el_defects(np.random.default_rng(5), image, 2, kinds=(kind,))
    assert np.array_equal(out, again) and np.array_equal(mask, mask2)
    assert out.shape == image.shape and mask.shape == image.shape[:2] and mask.any()
    assert (out.astype(int) <= image + 1).all()  # EL defects emit less light
    assert out[mask].mean() < image[mask].mean() - 5
    cov, gain = el_defect(np.random.default_rng(0), kind, 32)
    assert cov.shape == (32, 32) and 0.0 <= cov.min() and cov.max() <= 1.0 and 0 < gain < 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fusion_with_a_random_head_orders_as_the_anchors(seed: int) -> None:
    """A head whose calibration scores are noise gets weight 0: the fused score is then an
    increasing function of the anchors' sum, so its AUROC equals theirs on any test set."""
    rng = np.random.default_rng(seed)
    k, m = 8, 16
    calib_n = {"mfm": rng.normal(0, 1, k), "knn": rng.normal(0, 1, k),
               "icas_tta": rng.normal(0, 1, k)}
    calib_a = {"mfm": rng.normal(3, 1, m), "knn": rng.normal(3, 1, m),
               "icas_tta": rng.normal(0, 1, m)}
    w = calibrate_fusion(calib_n, calib_a, ("mfm", "knn"))
    assert w.weight["icas_tta"] == 0.0
    labels = np.r_[np.zeros(30), np.ones(30)]
    test = {"mfm": rng.normal(labels, 1.0), "knn": rng.normal(labels, 1.0),
            "icas_tta": rng.normal(0, 5, 60)}
    fused = fuse_scores(test, w)
    anchors = sum((test[c] - w.mean[c]) / w.std[c] for c in ("mfm", "knn"))
    a = lambda s: auroc(s[labels == 0], s[labels == 1])  # noqa: E731
    assert a(fused) == a(anchors)


def test_evaluate_has_the_tta_row_and_refuses_bad_copies(tmp_path: Path, capsys) -> None:
    root = tmp_path / "gravel_spot"
    write_benchmark(root, "gravel", "spot", seed=0, size=48, n_reference=3, n_test=6)
    out = tmp_path / "r.json"
    from pasta_ros.core.icas.model import ICASModel, default_arch, save_checkpoint

    torch.manual_seed(0)
    arch = default_arch(tiny=True, input_size=(48, 48), layers=1, queries=8, hidden=32,
                        mask_dim=16, ffn=64)
    ckpt = str(save_checkpoint(tmp_path / "m.pt", ICASModel(arch).eval(), stage="anomaly",
                               step=0))
    ev = ["-q", "icas", "evaluate", "--checkpoint", ckpt, "--data", str(root), "--seeds", "0",
          "--shots", "2,3", "--calib-defects", "1"]
    assert main([*ev, "--tta-copies", "2", "--json", str(out), "--dump-scores"]) == 0
    res = json.loads(out.read_text())
    assert "icas_tta" in res["auroc"]["k2"] and res["tta_copies"] == 2
    assert "icas_tta" not in res["fusion"]["k2"]["weight"]  # 1 shot left: no LOO head
    assert "icas_tta" in res["fusion"]["k3"]["weight"]
    assert len(res["scores"][1]["calib"][0]["icas_tta"]) == 3
    assert main([*ev, "--tta-copies", "0", "--json", str(out)]) == 0
    assert "icas_tta" not in json.loads(out.read_text())["auroc"]["k2"]
    assert main([*ev, "--tta-copies", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "tta copies" in err[-1]
