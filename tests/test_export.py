"""ONNX export: registry backbones and the fused cluster-map graph, compared with torch."""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
import pytest
import torch

from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.errors import PastaError
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.export.fused import (
    FusedClusterNet,
    export_fused,
    smooth_test_image,
    torch_cluster_map,
)
from pasta_ros.export.onnx_export import (
    ExportError,
    export_backbone,
    export_onnx,
    ort_session,
    sample_centers,
)

# (name, tiny, camera size W x H): small sizes keep each export to a few seconds.
BACKBONES = [
    ("efficientnet_lite0", False, (96, 64)),
    ("dinov2_vits14", True, (70, 42)),
    ("dinov3_vits16", True, (80, 48)),
    ("dinov3_convnext_tiny", True, (96, 64)),
    ("clip_vit_b16", True, (80, 48)),
    ("clip_vit_b32_laion2b", True, (96, 64)),
]


@pytest.mark.parametrize(("name", "tiny", "size"), BACKBONES, ids=[b[0] for b in BACKBONES])
def test_backbone_onnx_matches_torch(name, tiny, size, tmp_path):
    report = export_backbone(name, tmp_path, size, tiny=tiny)
    model = onnx.load(report.path)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert f"{size[0]}x{size[1]}" in report.path
    p = report.parity[0]
    assert p.max_abs < 1e-4, p.line()
    assert p.cosine > 0.99999, p.line()
    assert p.agreement is not None and p.agreement >= 0.999, p.line()


def test_dynamic_batch_export_runs_any_batch(tmp_path):
    report = export_backbone("dinov2_vits14", tmp_path, (56, 42), tiny=True, dynamic_batch=True)
    out = ort_session(report.path).run(None, {"image": np.zeros((3, 3, 42, 56), np.float32)})
    assert out[0].shape == (3, 32, 3, 4)


def test_old_opset_and_broken_module_are_refused(tmp_path):
    net = torch.nn.Identity()
    with pytest.raises(ExportError, match="opset 13"):
        export_onnx(net, (torch.zeros(1),), tmp_path / "a.onnx", input_names=["x"],
                    output_names=["y"], opset=13)

    class Bad(torch.nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    with pytest.raises(ExportError, match="Bad failed: ValueError: boom"):
        export_onnx(Bad(), (torch.zeros(1),), tmp_path / "b.onnx", input_names=["x"],
                    output_names=["y"])


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


@pytest.mark.parametrize("layout", ["uint8_nhwc", "float_nchw"])
def test_fused_graph_cluster_maps_match_torch(lite0, layout, tmp_path):
    """Pixels -> cluster map in one graph: the same ids as FeatureExtractor + assign_clusters,
    colour descriptor included."""
    images = [smooth_test_image(96, 64, s) for s in range(3)]
    ext = FeatureExtractor(lite0, (96, 64), "cpu", color_weight=2.0)
    centers = sample_centers(ext.features(images), k=12)
    net = FusedClusterNet(lite0, centers, 2.0, layout).eval()
    report = export_fused(net, tmp_path / "fused.onnx", (96, 64), images=images)
    assert report.parity[0].agreement >= 0.999
    feed = images[0][None] if layout == "uint8_nhwc" else \
        images[0][None].transpose(0, 3, 1, 2).astype(np.float32) / 255
    out = ort_session(report.path).run(None, {"image": feed})[0]
    assert out.dtype == np.int64 and out.shape == (1, 8, 12)
    assert np.array_equal(out, torch_cluster_map(net, images[:1]).numpy())


def test_fused_graph_rejects_centres_of_another_width(lite0):
    with pytest.raises(ExportError, match=r"expected \(K, 155\)"):
        FusedClusterNet(lite0, torch.zeros(4, 152), color_weight=2.0)
    with pytest.raises(ExportError, match="layout"):
        FusedClusterNet(lite0, torch.zeros(4, 152), layout="bgr")


def _export_parser() -> argparse.ArgumentParser:
    from pasta_ros.cli.export import register

    ap = argparse.ArgumentParser(prog="pasta")
    register(ap.add_subparsers(dest="command"))
    return ap


def test_cmd_export_writes_onnx_and_report(tmp_path, capsys):
    from pasta_ros.cli.export import cmd_export

    args = _export_parser().parse_args(["export", "--backbone", "dinov2_vits14", "--tiny",
                                        "--input-size", "56x42", "--out", str(tmp_path)])
    result = cmd_export(args)
    assert result["onnx"][0]["input_size"] == [56, 42]
    saved = json.loads((tmp_path / "export_report.json").read_text())
    assert saved["onnx"][0]["parity"][0]["cosine"] > 0.99999
    assert "max abs error" in capsys.readouterr().out


def test_cmd_export_tensorrt_without_tensorrt_names_what_is_missing(tmp_path, monkeypatch):
    import sys

    from pasta_ros.cli.export import cmd_export

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    args = _export_parser().parse_args(["export", "--backbone", "dinov2_vits14", "--tiny",
                                        "--format", "tensorrt", "--out", str(tmp_path)])
    with pytest.raises(PastaError, match="tensorrt module is not installed"):
        cmd_export(args)
    assert not list(tmp_path.glob("*.onnx"))  # failed before exporting anything


def test_cmd_export_with_nothing_to_do(tmp_path):
    from pasta_ros.cli.export import cmd_export

    args = _export_parser().parse_args(["export", "--out", str(tmp_path)])
    with pytest.raises(PastaError, match="nothing to export"):
        cmd_export(args)


def test_cmd_export_model_writes_backbone_and_fused_graph(lite0, tmp_path):
    from pasta_ros.cli.export import cmd_export
    from pasta_ros.core.model_io import CalibratedModel, save_model

    ext = FeatureExtractor(lite0, (96, 64), "cpu", color_weight=2.0)
    centers = sample_centers(ext.features([smooth_test_image(96, 64, 4)]), k=6).numpy()
    p = np.full(6, 1 / 6)
    model = CalibratedModel("efficientnet_lite0", "", (96, 64), 8, centers, p, p,
                            np.zeros(6, bool), np.zeros(6, bool), np.zeros(4096, np.float32),
                            0.05, 0.1, 0, color_weight=2.0)
    save_model(model, tmp_path / "model")
    args = _export_parser().parse_args(["export", "--model", str(tmp_path / "model"),
                                        "--out", str(tmp_path / "out")])
    kinds = {r["kind"]: r for r in cmd_export(args)["onnx"]}
    assert kinds["fused"]["input_size"] == [96, 64]
    assert kinds["fused"]["parity"][0]["agreement"] >= 0.999
    assert kinds["backbone"]["parity"][0]["cosine"] > 0.99999
    # Named as the pipeline's runtime looks them up in <engine_dir>: no export at start-up.
    out = tmp_path / "out"
    assert len(list(out.glob("efficientnet_lite0-*-96x64.onnx"))) == 1
    assert len(list(out.glob("fused-*-96x64.onnx"))) == 1
