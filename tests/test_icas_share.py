"""One encoder pass in the node (issue #10 item 4): the iCAS vote on PASTA's backbone features
gives the same vote as its own encoder at the same resolution, and its encoder does not run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel, default_arch
from pasta_ros.core.icas.prompting import ICASPredictor
from pasta_ros.core.icas.vote import IcasVote
from pasta_ros.data.synth import render_scene
from pasta_ros.pipeline import PastaPipeline

W, H = 224, 128  # the tiny model's input size (conftest TINY_SIZE)
SMALL = dict(layers=1, queries=8, hidden=32, mask_dim=16, ffn=64)


def scene(seed: int) -> np.ndarray:
    return render_scene("steel", np.random.default_rng(seed), W, H, 4, 2)[0]


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path) -> PastaPipeline:
    return PastaPipeline.load(tiny_model, PastaConfig(backend="torch", device="cpu"))


def lite0_predictor(input_size: tuple[int, int] = (64, 64)) -> ICASPredictor:
    """A small random decoder on the bundled efficientnet_lite0 (PASTA's backbone)."""
    torch.manual_seed(0)
    return ICASPredictor(ICASModel(default_arch("efficientnet_lite0", input_size=input_size,
                                                **SMALL)).eval())


def encoder_runs(predictor: ICASPredictor) -> list[int]:
    """A counter of the iCAS encoder's forward calls (a forward hook, the real encoder)."""
    calls = [0]
    predictor.model.encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("max_cells", [0, 100])  # 16x28 grid: as is, and pooled by 3
def test_shared_features_give_the_two_pass_vote(pipeline, max_cells) -> None:
    shared, own = lite0_predictor(), lite0_predictor()
    assert pipeline.share_icas_backbone(shared, max_cells)
    assert pipeline.share_icas_backbone(own, max_cells)
    assert shared.model.input_size == own.model.input_size == (W, H)  # PASTA's size now
    normals = [scene(s) for s in (10, 11)]
    for p in (shared, own):  # floor 0: the threshold below is the vote's (not raised)
        p.set_prompt(dataclasses.replace(p.encode_normal_prompt(normals), floor=0.0))
    rgb = scene(3)
    # the score map on PASTA's raw backbone features equals the encoder's own pass
    raw = pipeline.extractor.features_and_raw([pipeline.extractor.prepare(rgb)])[1]
    torch.testing.assert_close(shared.score_grid(rgb, feats=raw)[0], own.score_grid(rgb)[0],
                               rtol=0, atol=1e-6)
    # a threshold that splits this frame's patches, so the vote has something to agree on
    thr = float(own.score_grid(rgb)[0].median())
    runs = encoder_runs(shared)
    a = pipeline.process(rgb, icas=IcasVote(shared, "replace", thr))
    assert runs[0] == 0  # one encoder pass: PASTA's
    b = pipeline.process(rgb, icas=IcasVote(own, "replace", thr, share=False))
    assert 0 < a.anomaly_patches.sum() < a.anomaly_patches.size
    np.testing.assert_array_equal(a.anomaly_patches, b.anomaly_patches)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_the_vote_runs_its_own_encoder_when_it_cannot_share(pipeline) -> None:
    p = lite0_predictor()  # left at 64x64: not PASTA's input size
    p.set_normal_prompt([scene(10)])
    runs = encoder_runs(p)
    vote = IcasVote(p, "combine")
    assert not vote.shares_features(pipeline.extractor.backbone, pipeline.extractor.max_size)
    pipeline.process(scene(3), icas=vote)
    assert runs[0] == 1


def test_another_backbone_is_not_shared_and_keeps_its_prompts(pipeline) -> None:
    torch.manual_seed(0)
    tiny = ICASPredictor(ICASModel(default_arch(tiny=True, input_size=(64, 64), **SMALL)))
    tiny.set_normal_prompt([scene(10)])
    assert not pipeline.share_icas_backbone(tiny)
    assert tiny.model.input_size == (64, 64) and tiny.normal is not None


def test_sharing_at_a_new_size_drops_prompts_of_the_old_one(pipeline) -> None:
    p = lite0_predictor()
    p.set_normal_prompt([scene(10)])
    assert pipeline.share_icas_backbone(p)
    assert p.normal is None  # encoded at 64x64: no longer valid at 224x128
    p.set_normal_prompt([scene(10)])
    assert pipeline.share_icas_backbone(p) and p.normal is not None  # same size: kept


def test_shared_features_of_the_wrong_shape_are_refused() -> None:
    p = lite0_predictor()
    p.set_normal_prompt([scene(10)])
    with pytest.raises(PastaError, match="shared features must be"):
        p.score_grid(scene(3), feats=torch.zeros(1, 7, 4, 4))


def test_pooling_to_a_cell_budget_by_hand() -> None:
    p = lite0_predictor()
    feats = torch.arange(24, dtype=torch.float32).reshape(1, 1, 4, 6)
    assert p.pool(feats) is feats  # max_cells 0: no pooling
    p.max_cells = 6  # 24 cells -> factor ceil(sqrt(24 / 6)) = 2 -> 2x3 cells
    torch.testing.assert_close(p.pool(feats), torch.tensor([[[[3.5, 5.5, 7.5],
                                                               [15.5, 17.5, 19.5]]]]))
    p.max_cells = 5  # factor ceil(sqrt(4.8)) = 3 -> 2x2, the bottom windows cover 1 row
    torch.testing.assert_close(p.pool(feats), torch.tensor([[[[7.0, 10.0], [19.0, 22.0]]]]))
    with pytest.raises(PastaError, match="max_cells"):
        p.share_backbone(p.model.encoder, (64, 64), -1)


def test_a_new_architecture_is_compared_again(pipeline, tmp_path) -> None:
    from pasta_ros.core.icas.model import save_checkpoint

    p = lite0_predictor()
    assert p.same_weights(pipeline.extractor.backbone)
    torch.manual_seed(0)
    tiny = ICASModel(default_arch(tiny=True, input_size=(64, 64), **SMALL))
    p.load_checkpoint(str(save_checkpoint(tmp_path / "t.pt", tiny, stage="generic", step=0)),
                      allow_arch_change=True)
    assert not p.same_weights(pipeline.extractor.backbone)
    assert not pipeline.share_icas_backbone(p)
