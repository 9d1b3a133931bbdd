"""The iCAS vote's decoder in ONNX Runtime (export/icas_decoder.py::OrtDecoder): the same
scores and vote as the torch decoder, its graph built when a prompt is set, torch for shapes
it has no graph for (while one is built), and no stale graph after new weights."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel, default_arch, save_checkpoint
from pasta_ros.core.icas.prompting import ICASPredictor, area_mask
from pasta_ros.core.icas.vote import IcasVote
from pasta_ros.data.synth import render_scene
from pasta_ros.export.icas_decoder import OrtDecoder, use_decoder_backend
from pasta_ros.pipeline import PastaPipeline

W, H = 224, 128  # the tiny model's input size (conftest TINY_SIZE)
SMALL = dict(layers=1, queries=8, hidden=32, mask_dim=16, ffn=64)


class CountingRuntime:
    """A real OrtDecoder that counts the frames its graphs scored (calls not answered None)."""

    def __init__(self, inner: OrtDecoder) -> None:
        self.inner, self.scored = inner, 0

    def __call__(self, *args):
        out = self.inner(*args)
        self.scored += out is not None
        return out

    def prepare(self, *args) -> None:
        self.inner.prepare(*args)

    def reset(self, model) -> None:
        self.inner.reset(model)


def scene(seed: int, w: int = W, h: int = H) -> np.ndarray:
    return render_scene("steel", np.random.default_rng(seed), w, h, 4, 2)[0]


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path) -> PastaPipeline:
    return PastaPipeline.load(tiny_model, PastaConfig(backend="torch", device="cpu"))


def predictor(pipeline: PastaPipeline, decoder: str) -> ICASPredictor:
    torch.manual_seed(0)
    p = ICASPredictor(ICASModel(default_arch("efficientnet_lite0", input_size=(64, 64),
                                             **SMALL)).eval())
    assert pipeline.share_icas_backbone(p, 0)
    use_decoder_backend(p, decoder)
    return p


def raw_features(pipeline: PastaPipeline, rgb: np.ndarray) -> torch.Tensor:
    return pipeline.extractor.features_and_raw([pipeline.extractor.prepare(rgb)])[1]


def test_onnxruntime_decoder_gives_the_torch_scores_and_vote(pipeline) -> None:
    ort_p, torch_p = predictor(pipeline, "onnxruntime"), predictor(pipeline, "torch")
    assert isinstance(ort_p.runtime, OrtDecoder) and torch_p.runtime is None
    counting = CountingRuntime(ort_p.runtime)
    ort_p.use_runtime(counting)
    normals = [scene(s) for s in (10, 11)]
    for p in (ort_p, torch_p):  # floor 0: the vote's threshold below is not raised
        p.set_prompt(dataclasses.replace(p.encode_normal_prompt(normals), floor=0.0))
    assert ort_p.normal.grid is not None
    assert counting.inner.ready(ort_p.normal.grid, 0, 2)  # built when the prompt was set
    rgb = scene(3)
    raw = raw_features(pipeline, rgb)
    got, want = ort_p.score_grid(rgb, feats=raw)[0], torch_p.score_grid(rgb, feats=raw)[0]
    assert counting.scored == 1  # the graph scored it, not the torch fallback
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    thr = float(want.median())  # splits the patches, so the votes have something to agree on
    a = pipeline.process(rgb, icas=IcasVote(ort_p, "replace", thr))
    b = pipeline.process(rgb, icas=IcasVote(torch_p, "replace", thr))
    assert counting.scored == 2
    assert 0 < a.anomaly_patches.sum() < a.anomaly_patches.size
    np.testing.assert_array_equal(a.anomaly_patches, b.anomaly_patches)


def test_anomaly_prompt_scores_match_too(pipeline) -> None:
    ort_p, torch_p = predictor(pipeline, "onnxruntime"), predictor(pipeline, "torch")
    image = scene(12)
    mask = area_mask(image.shape[:2], points=[(60, 60), (150, 80)])
    for p in (ort_p, torch_p):
        p.set_anomaly_prompt(image, mask)
    assert ort_p.runtime.ready(ort_p.anomaly.grid, *ort_p.anomaly.token_counts)
    raw = raw_features(pipeline, scene(4))
    torch.testing.assert_close(ort_p.score_grid(scene(4), feats=raw)[0],
                               torch_p.score_grid(scene(4), feats=raw)[0], rtol=0, atol=1e-5)


def test_a_frame_of_new_shapes_is_scored_by_torch_while_its_graph_is_built(pipeline) -> None:
    ort_p, torch_p = predictor(pipeline, "onnxruntime"), predictor(pipeline, "torch")
    for p in (ort_p, torch_p):
        p.set_normal_prompt([scene(10)])
    wide = scene(5, 2 * W, H)  # another aspect: a grid no prompt prepared
    raw = raw_features(pipeline, wide)
    grid = tuple(raw.shape[-2:])
    assert grid != ort_p.normal.grid and not ort_p.runtime.ready(grid, 0, 1)
    first = ort_p.score_grid(wide, feats=raw)[0]
    torch.testing.assert_close(first, torch_p.score_grid(wide, feats=raw)[0], rtol=0, atol=0)
    deadline = time.monotonic() + 120.0
    while not ort_p.runtime.ready(grid, 0, 1):  # built by a background thread
        assert time.monotonic() < deadline, "the graph for the new grid was never built"
        time.sleep(0.05)
    torch.testing.assert_close(ort_p.score_grid(wide, feats=raw)[0], first, rtol=0, atol=1e-5)


def test_new_weights_drop_the_graphs_built_from_the_old(pipeline, tmp_path) -> None:
    p = predictor(pipeline, "onnxruntime")
    p.set_normal_prompt([scene(10)])
    grid = p.normal.grid
    assert p.runtime.ready(grid, 0, 1)
    torch.manual_seed(1)
    other = ICASModel(default_arch("efficientnet_lite0", input_size=(64, 64), **SMALL))
    p.load_checkpoint(str(save_checkpoint(tmp_path / "o.pt", other, stage="generic", step=0)))
    assert not p.runtime.ready(grid, 0, 1)
    p.use_runtime(p.runtime)  # prepares the prompts already set: new weights, new graph
    assert p.runtime.ready(grid, 0, 1)
    torch_p = predictor(pipeline, "torch")
    torch_p.load_checkpoint(str(tmp_path / "o.pt"))
    torch_p.set_prompt(p.normal)
    raw = raw_features(pipeline, scene(6))
    torch.testing.assert_close(p.score_grid(scene(6), feats=raw)[0],
                               torch_p.score_grid(scene(6), feats=raw)[0], rtol=0, atol=1e-5)


def test_an_unknown_decoder_backend_is_refused() -> None:
    torch.manual_seed(0)
    p = ICASPredictor(ICASModel(default_arch("efficientnet_lite0", input_size=(64, 64),
                                             **SMALL)))
    with pytest.raises(PastaError, match="decoder backend must be one of onnxruntime, torch"):
        use_decoder_backend(p, "tensorrt")
    assert p.runtime is None


def test_a_graph_that_cannot_be_built_is_logged_once_and_torch_scores(pipeline, caplog) -> None:
    p = predictor(pipeline, "onnxruntime")
    runtime = p.runtime
    c = p.model.arch.decoder.in_channels
    feats, none = torch.randn(1, c, 4, 6), torch.zeros(1, 0, c)
    idx = p.model.queries(feats)
    with caplog.at_level("WARNING", logger="pasta"):
        runtime.prepare((4, 6), 0, 0)  # no non-target token: export_decoder refuses it
    assert not runtime.ready((4, 6), 0, 0)
    assert "not built" in caplog.text and "n_ntp must be >= 1" in caplog.text
    for _ in range(3):  # remembered: no export thread per frame
        assert runtime(feats, none, none, idx) is None
        assert not any(t.name == "pasta-icas-export" for t in threading.enumerate())
