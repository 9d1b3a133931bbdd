"""iCAS as the pipeline's anomaly vote, and the prompt requests the node serves (no ROS)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel, default_arch
from pasta_ros.core.icas.prompting import ICASPredictor
from pasta_ros.core.icas.vote import IcasVote
from pasta_ros.data.bags import BagError, write_bag_images
from pasta_ros.data.images import ImageReadError
from pasta_ros.data.synth import render_scene
from pasta_ros.pipeline import PastaPipeline
from pasta_ros.ros.prompts import PromptRequest, apply_request, prompt_state

W, H = 224, 128


@pytest.fixture(scope="module")
def predictor() -> ICASPredictor:
    torch.manual_seed(0)
    arch = default_arch(tiny=True, input_size=(64, 64), layers=1, queries=8, hidden=32,
                        mask_dim=16, ffn=64)
    return ICASPredictor(ICASModel(arch).eval())


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path) -> PastaPipeline:
    return PastaPipeline.load(tiny_model)


def scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rgb, labels, _ = render_scene("steel", np.random.default_rng(seed), W, H, 4, 2)
    return rgb, labels


def test_merge_by_hand() -> None:
    pasta = torch.tensor([[True, False], [False, False]])
    icas = torch.tensor([[False, True], [False, False]])
    p = ICASPredictor.__new__(ICASPredictor)  # merge does not touch the predictor
    assert torch.equal(IcasVote(p, "replace").merge(pasta, icas), icas)
    assert torch.equal(IcasVote(p, "combine").merge(pasta, icas),
                       torch.tensor([[True, True], [False, False]]))
    assert torch.equal(IcasVote(p, "combine").merge(pasta, None), pasta)


@pytest.mark.parametrize("mode,threshold,match", [("off", 0.5, "mode"), ("both", 0.5, "mode"),
                                                  ("replace", 0.0, "threshold"),
                                                  ("combine", 1.5, "threshold")])
def test_vote_settings_are_checked(predictor, mode, threshold, match) -> None:
    with pytest.raises(PastaError, match=match):
        IcasVote(predictor, mode, threshold)


def test_without_a_prompt_the_vote_is_pastas(pipeline, predictor) -> None:
    predictor.clear()
    rgb, _ = scene(1)
    plain = pipeline.process(rgb)
    for mode in ("replace", "combine"):
        r = pipeline.process(rgb, icas=IcasVote(predictor, mode))
        assert r.vote == "pasta"
        np.testing.assert_array_equal(r.labels, plain.labels)


def test_combine_only_adds_anomalies_and_replace_uses_icas_patches(pipeline, predictor) -> None:
    normals = [scene(s)[0] for s in (10, 11)]
    predictor.clear()
    predictor.set_normal_prompt(normals)
    rgb, _ = scene(2)
    plain = pipeline.process(rgb)
    vote = IcasVote(predictor, "combine", 0.3)
    both = pipeline.process(rgb, icas=vote)
    assert both.vote == "pasta+icas" and both.timings["icas"] > 0
    # the segmentation is PASTA's in every mode; the union can only turn targets into anomalies
    np.testing.assert_array_equal(both.labels > 0, plain.labels > 0)
    assert np.all(both.labels[plain.labels == 2] == 2)
    assert np.all(both.anomaly_patches[plain.anomaly_patches])
    icas_only = vote.patch_map(rgb, plain.anomaly_patches.shape)
    np.testing.assert_array_equal(both.anomaly_patches,
                                  plain.anomaly_patches | icas_only.numpy())
    rep = pipeline.process(rgb, icas=IcasVote(predictor, "replace", 0.3))
    assert rep.vote == "icas"
    np.testing.assert_array_equal(rep.anomaly_patches, icas_only.numpy())
    np.testing.assert_array_equal(rep.labels > 0, plain.labels > 0)
    predictor.clear()


def _write(path: Path, rgb: np.ndarray) -> str:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def test_prompt_requests_set_and_clear(predictor, tmp_path: Path) -> None:
    predictor.clear()
    files = [_write(tmp_path / f"n{s}.png", scene(s)[0]) for s in (20, 21, 22)]
    msg = apply_request(predictor, PromptRequest("normal", files))
    assert "3 image" in msg and prompt_state(predictor) == {"normal_shots": 3,
                                                            "anomaly_prompt": False}
    rgb, labels = scene(23)
    image = _write(tmp_path / "a.png", rgb)
    mask = _write(tmp_path / "m.png", np.repeat(((labels == 2) * 255).astype(np.uint8)[..., None],
                                                3, 2))
    apply_request(predictor, PromptRequest("anomaly", [image], mask_file=mask))
    assert prompt_state(predictor) == {"normal_shots": 3, "anomaly_prompt": True}
    apply_request(predictor, PromptRequest("clear_normal"))
    assert prompt_state(predictor) == {"normal_shots": 0, "anomaly_prompt": True}
    apply_request(predictor, PromptRequest("anomaly", [image], points=[30.0, 40.0],
                                           boxes=[100.0, 10.0, 140.0, 60.0]))
    apply_request(predictor, PromptRequest("clear"))
    assert prompt_state(predictor) == {"normal_shots": 0, "anomaly_prompt": False}


def test_prompts_from_a_bag(predictor, tmp_path: Path) -> None:
    predictor.clear()
    bag = tmp_path / "normal_bag"
    write_bag_images(bag, "/cam/image", [scene(s)[0] for s in range(30, 35)], storage="mcap")
    apply_request(predictor, PromptRequest("normal", bag=str(bag), image_topic="/cam/image",
                                           max_images=3))
    assert prompt_state(predictor)["normal_shots"] == 3
    with pytest.raises(BagError, match="/other"):
        apply_request(predictor, PromptRequest("normal", bag=str(bag), image_topic="/other"))
    assert prompt_state(predictor)["normal_shots"] == 3  # a failed call keeps the prompt
    predictor.clear()


def test_bad_prompt_requests_name_the_problem_and_keep_the_prompts(predictor,
                                                                   tmp_path: Path) -> None:
    predictor.clear()
    rgb, labels = scene(40)
    image = _write(tmp_path / "a.png", rgb)
    apply_request(predictor, PromptRequest("normal", [image]))
    before = predictor.prompts()
    small = _write(tmp_path / "small.png", np.full((10, 10, 3), 255, np.uint8))
    empty = _write(tmp_path / "empty.png", np.zeros((H, W, 3), np.uint8))
    cases = [
        (PromptRequest("sideways", [image]), PastaError, "action must be one of"),
        (PromptRequest("normal"), PastaError, "needs prompt images"),
        (PromptRequest("normal", [str(tmp_path / "missing.png")]), ImageReadError, "not found"),
        (PromptRequest("anomaly", [image]), PastaError, "needs mask_file"),
        (PromptRequest("anomaly", [image], mask_file=small), PastaError, "same size"),
        (PromptRequest("anomaly", [image], mask_file=empty), PastaError, "empty prompt mask"),
        (PromptRequest("anomaly", [image], mask_file=image, points=[1.0, 2.0]), PastaError,
         "not both"),
        (PromptRequest("anomaly", [image], points=[1.0, 2.0, 3.0]), PastaError, "groups of 2"),
        (PromptRequest("normal", [image], bag=str(tmp_path)), PastaError, "not both"),
    ]
    for req, error, match in cases:
        with pytest.raises(error, match=match):
            apply_request(predictor, req)
        assert all(a is b for a, b in zip(predictor.prompts(), before))
    predictor.clear()


def test_evaluate_cli_with_the_icas_vote(run_cli, tiny_model, tiny_steel, predictor,
                                         tmp_path: Path) -> None:
    from pasta_ros.core.icas.model import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.pt", predictor.model, stage="anomaly", step=0)
    base = ["-q", "evaluate", "--model", str(tiny_model), "--test", str(tiny_steel.root)]
    code, out, err = run_cli(base + ["--json", str(tmp_path / "off.json")])
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = run_cli(base + ["--icas", "combine", "--icas-shots", "2",
                                     "--icas-threshold", "0.3", "--icas-checkpoint", str(ckpt)])
    assert code == 0, err
    both = json.loads(out)
    assert both["icas"]["mode"] == "combine" and len(both["icas"]["normal"]) == 2
    assert both["images"] == plain["images"]
    assert both["iou_background"] == plain["iou_background"]  # same objects in every mode
    for args, word in ((["--icas", "replace", "--icas-shots", "0"], "needs a prompt"),
                       (["--icas", "replace", "--icas-shots", "99"], "holds"),
                       (["--icas", "replace", "--icas-anomaly-image", str(ckpt)], "go together")):
        code, _, err = run_cli(base + args + ["--icas-checkpoint", str(ckpt)])
        assert code == 2 and word in err, err


def test_negative_clicks(predictor, tmp_path: Path) -> None:
    """A negative click adds a non-target token pooled under its disk; it wins where it
    overlaps the positive area, and a prompt left with no positive pixel is refused."""
    predictor.clear()
    rgb, labels = scene(24)
    image = _write(tmp_path / "a.png", rgb)
    apply_request(predictor, PromptRequest("anomaly", [image], points=[30.0, 40.0]))
    plain = predictor.anomaly
    msg = apply_request(predictor, PromptRequest("anomaly", [image], points=[30.0, 40.0],
                                                 negative_points=[150.0, 60.0, 10.0, 100.0]))
    assert "2 negative click(s)" in msg
    with_neg = predictor.anomaly
    assert plain.q_ntp.shape[0] == 1 and with_neg.q_ntp.shape[0] == 2
    assert torch.equal(plain.q_p, with_neg.q_p)
    neg_score = predictor.score_grid(rgb, "anomaly")[0]
    predictor.set_prompt(plain)
    assert not torch.allclose(neg_score, predictor.score_grid(rgb, "anomaly")[0])
    with pytest.raises(PastaError, match="outside the negative clicks"):
        apply_request(predictor, PromptRequest("anomaly", [image], points=[30.0, 40.0],
                                               negative_points=[30.0, 40.0]))
    with pytest.raises(PastaError, match="groups of 2"):
        apply_request(predictor, PromptRequest("anomaly", [image], points=[30.0, 40.0],
                                               negative_points=[1.0]))
    assert predictor.anomaly is plain  # failed calls keep the prompt
    predictor.clear()


def test_normal_prompt_floor_raises_the_vote_threshold(predictor) -> None:
    """floor = the highest score a shot reaches against the other shots (by hand here); with a
    normal prompt alone no patch at or below it is voted anomalous."""
    from pasta_ros.core.icas.prompting import NormalPrompt, normal_prompt, score_normal

    model = predictor.model
    feats = [predictor._features(scene(s)[0]) for s in (40, 41, 42)]
    prompt = normal_prompt(model, feats)
    k = model.arch.decoder.queries
    by_hand = 0.0
    for i in range(3):
        keep = [j for j in range(3) if j != i]
        loo = NormalPrompt(prompt.backbone, prompt.input_size, prompt.ntp[keep],
                           torch.cat([prompt.q_r[j * k:(j + 1) * k] for j in keep]))
        by_hand = max(by_hand, float(score_normal(model, feats[i], loo).max()))
    assert prompt.floor == pytest.approx(by_hand) and prompt.floor > 0
    assert normal_prompt(model, feats, calibrate=False).floor == 0.0
    assert normal_prompt(model, feats[:1]).floor == 0.0
    low = IcasVote(predictor, "combine", threshold=min(prompt.floor / 2, 0.5))
    assert low.patch_threshold(prompt) > prompt.floor
    assert low.patch_threshold(None) == low.threshold
    high = IcasVote(predictor, "combine", threshold=1.0)
    assert high.patch_threshold(prompt) == 1.0 or prompt.floor >= 1.0
    predictor.clear()
    predictor.set_prompt(prompt)
    rgb = scene(43)[0]
    grid = (8, 8)
    score = torch.nn.functional.interpolate(predictor.score_grid(rgb)[0][None, None], size=grid,
                                            mode="bilinear", align_corners=False)[0, 0]
    voted = low.patch_map(rgb, grid)
    assert torch.equal(voted, score >= low.patch_threshold(prompt))
    assert not voted[score <= prompt.floor].any()
    predictor.clear()
