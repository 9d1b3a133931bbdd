"""Issue #12 frame path: static 'same' padding folded into the ONNX convs, numpy
normalisation and colour cells, the graph-format field of the cache sidecar, and `bench
frame --also`. Hand-computed values and agreement thresholds with real ONNX Runtime; no
timings."""

from __future__ import annotations

import json
from argparse import Namespace
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.features import patch_colors, patch_colors_uint8
from pasta_ros.core.preprocess import normalize_nchw, to_tensor_batch
from pasta_ros.export.artifacts import GRAPH_FORMAT, ArtifactKey, sidecar_path, stale_reason
from pasta_ros.export.onnx_export import export_backbone, ort_session
from pasta_ros.export.static_pad import StaticSameConv, same_pads, static_padding

SIZE = (96, 64)  # (W, H), a multiple of lite0's stride 8


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def test_same_pads_by_hand():
    # 3x3 stride 2 on an even side: total 1, the odd pixel right/bottom (TensorFlow 'same')
    assert same_pads((64, 96), (3, 3), (2, 2)) == (0, 1, 0, 1)
    # 5x5 stride 2 on 32 x 57: H total 3 -> (1, 2); W: ceil(57/2)=29, 28*2+5-57 = 4 -> (2, 2)
    assert same_pads((32, 57), (5, 5), (2, 2)) == (2, 2, 1, 2)
    # stride 1 keeps the size: k - 1 split evenly
    assert same_pads((10, 10), (3, 3), (1, 1)) == (1, 1, 1, 1)
    assert same_pads((7, 7), (1, 1), (1, 1)) == (0, 0, 0, 0)


def test_static_padding_equals_the_dynamic_convs_in_torch(lite0):
    x = torch.randn(2, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0))
    fixed = static_padding(lite0, (x[:1],))
    assert fixed is not lite0
    assert any(isinstance(m, StaticSameConv) for m in fixed.modules())
    assert not any(isinstance(m, StaticSameConv) for m in lite0.modules())  # left as it was
    with torch.inference_mode():
        assert torch.equal(fixed(x), lite0(x))  # same pads, same conv: bit for bit
    with pytest.raises(ValueError, match="fixed for"):
        fixed(torch.zeros(1, 3, 32, 48))
    plain = torch.nn.Conv2d(3, 4, 3)
    assert static_padding(plain, (torch.zeros(1, 3, 8, 8),)) is plain


def test_exported_lite0_has_no_pad_nodes_and_matches_torch(lite0, tmp_path):
    report = export_backbone("efficientnet_lite0", tmp_path, SIZE, backbone=lite0)
    ops = Counter(n.op_type for n in onnx.load(report.path).graph.node)
    assert ops["Pad"] == 0 and ops["Conv"] == 33
    asym = [n for n in onnx.load(report.path).graph.node if n.op_type == "Conv"
            and len({*next(a.ints for a in n.attribute if a.name == "pads")}) > 1]
    assert asym  # the stride-2 convs carry their asymmetric padding in the Conv itself
    p = report.parity[0]
    assert p.max_abs < 1e-4 and p.cosine > 0.99999 and p.agreement >= 0.999, p.line()
    # and on a batch of two (the batch axis is fixed at 1 here: one at a time)
    x = torch.randn(2, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(1))
    sess = ort_session(report.path)
    got = np.concatenate([sess.run(None, {"image": x[i:i + 1].numpy()})[0] for i in range(2)])
    with torch.inference_mode():
        assert np.abs(got - lite0(x).numpy()).max() < 1e-4


def test_dynamic_batch_static_pad_graph_runs_a_batch(lite0, tmp_path):
    report = export_backbone("efficientnet_lite0", tmp_path, SIZE, backbone=lite0,
                             dynamic_batch=True)
    x = torch.randn(3, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(2))
    got = ort_session(report.path).run(None, {"image": x.numpy()})[0]
    with torch.inference_mode():
        assert np.abs(got - lite0(x).numpy()).max() < 1e-4


def test_numpy_normalisation_by_hand_and_equal_to_torch():
    img = np.array([[[0, 127, 255]]], np.uint8)  # one pixel
    out = normalize_nchw([img], (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    # (v / 255 - 0.5) / std
    assert out.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(out.ravel(), [-2.0, (127 / 255 - 0.5) / 0.5, 0.5], atol=1e-6)
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(2)]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    arr = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255.0
    ref = (arr - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    got = to_tensor_batch(ims, mean, std, "cpu")
    assert got.dtype == torch.float32 and got.shape == (2, 3, 16, 24)
    assert (got - ref).abs().max() < 1e-5


def test_colour_cells_from_uint8_by_hand_and_equal_to_pooling():
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, :2] = (255, 0, 0)  # left cell red, right cell black
    cells = patch_colors_uint8([img], (1, 2))
    # red in the opponent space: (0.7071, 0.4082, 0.5774 * 0.5)
    np.testing.assert_allclose(cells[0, :, 0, 0].numpy(), [0.7071, 0.4082, 0.2887], atol=1e-4)
    np.testing.assert_allclose(cells[0, :, 0, 1].numpy(), 0.0, atol=1e-7)
    rng = np.random.default_rng(1)
    ims = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2)]
    rgb = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255.0
    assert (patch_colors_uint8(ims, (8, 12)) - patch_colors(rgb, (8, 12))).abs().max() < 1e-5
    assert patch_colors_uint8(ims, (7, 12)) is None  # 64 rows do not tile into 7 cells


def test_a_graph_of_the_old_format_is_stale(lite0, tmp_path):
    report = export_backbone("efficientnet_lite0", tmp_path, SIZE, backbone=lite0)
    from pathlib import Path

    from pasta_ros.export.artifacts import write_sidecar

    path = Path(report.path)
    key = ArtifactKey("backbone", "efficientnet_lite0@w1", SIZE)
    assert key.graph == GRAPH_FORMAT
    write_sidecar(path, key, {})
    assert stale_reason(path, key) is None
    side = json.loads(sidecar_path(path).read_text())
    del side["key"]["graph"]  # a sidecar written before the graph format existed
    sidecar_path(path).write_text(json.dumps(side))
    assert "graph" in stale_reason(path, key)


def test_bench_frame_also_times_the_feature_graph_in_the_same_run():
    from pasta_ros.bench.frame import bench_frame, variant_configs

    out = bench_frame(Namespace(repeats=2, device="cpu", frame_size=(160, 96), n_baseline=6,
                                also="feature"))
    feature = out["variants"]["feature"]
    assert feature["path"]["fused_graph"] is False and out["default_path"]["fused_graph"] is True
    assert {"backbone", "assign", "total", "post_backbone", "speedup"} <= set(feature)
    assert feature["labels_agree_pct"] >= 99.0 and feature["cluster_map_agree_pct"] >= 99.0
    with pytest.raises(ValueError, match="unknown"):
        variant_configs(PastaConfig(), "x")
