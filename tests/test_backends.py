"""Backends and the TensorRT engine cache: selection errors, providers, profiles, naming and
validation (pure, no GPU), ONNX Runtime parity through the pipeline's interfaces, and the
GPU-only TensorRT path (skipped here)."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.backends import BackendError, check_backend, open_runner
from pasta_ros.core.backends.onnxruntime import select_providers
from pasta_ros.core.backends.profiles import Profile, select_profile
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.export import tensorrt_build as tb
from pasta_ros.export.fused import smooth_test_image
from pasta_ros.export.runtime import ExportedBackbone, ExportedClusterMap, RuntimeOptions

KEY = tb.EngineKey("10.3.0", "NVIDIA Jetson AGX Orin", "8.7", "fp16", (912, 512))


# --- selection errors -------------------------------------------------------------------

def test_tensorrt_without_module_names_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError, match="tensorrt module is not installed"):
        check_backend("tensorrt")


def test_tensorrt_without_gpu_names_the_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="no CUDA GPU"):
        check_backend("tensorrt")
    with pytest.raises(BackendError, match="device 'cpu'"):
        check_backend("tensorrt", "cpu")


def test_unknown_backend_and_missing_onnxruntime(monkeypatch):
    with pytest.raises(BackendError, match="torch, onnxruntime, tensorrt"):
        check_backend("openvino")
    check_backend("onnxruntime", "cpu")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendError, match="onnxruntime module is not installed"):
        check_backend("onnxruntime")


def test_open_runner_tensorrt_fails_cleanly_here(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError, match="tensorrt"):
        open_runner("tensorrt", tmp_path / "x.engine")


def test_select_providers():
    cpu_only = ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(gpu, "cpu") == ["CPUExecutionProvider"]
    assert select_providers(cpu_only, "auto") == ["CPUExecutionProvider"]
    assert select_providers(gpu, "auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(gpu, "cuda", tensorrt_ep=True)[0] == "TensorrtExecutionProvider"
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        select_providers(cpu_only, "cuda")


# --- profiles -----------------------------------------------------------------------------

def test_select_profile_prefers_the_closest_opt_shape():
    profs = [tb.range_profile((4, 3, 512, 912), 8), *tb.batch_profiles((1, 3, 512, 912), [1, 2])]
    assert select_profile((1, 3, 512, 912), profs) == 1  # exact fixed profile beats the range
    assert select_profile((2, 3, 512, 912), profs) == 2
    assert select_profile((5, 3, 512, 912), profs) == 0
    with pytest.raises(BackendError, match="fits no optimisation profile"):
        select_profile((1, 3, 480, 640), profs)
    with pytest.raises(tb.EngineCacheError):
        tb.batch_profiles((1, 3, 8, 8), [0])
    assert Profile((1, 3), (2, 3), (4, 3)).contains((3, 3))


def test_trtexec_command():
    prof = tb.range_profile((1, 3, 512, 912), 4)
    cmd = tb.trtexec_command("trtexec", Path("m.onnx"), Path("m.engine"), "fp16", profile=prof)
    assert "--fp16" in cmd and "--onnx=m.onnx" in cmd and "--saveEngine=m.engine" in cmd
    assert "--minShapes=image:1x3x512x912" in cmd and "--maxShapes=image:4x3x512x912" in cmd
    assert "--fp16" not in tb.trtexec_command("trtexec", Path("a"), Path("b"), "fp32")


# --- engine naming and cache validation ---------------------------------------------------

def test_engine_name_encodes_version_gpu_cc_precision_size():
    name = tb.engine_file_name("efficientnet_lite0-abc", KEY)
    assert name == ("efficientnet_lite0_abc-912x512-fp16-trt10.3.0-sm87-"
                    "nvidia_jetson_agx_orin.engine")
    with pytest.raises(tb.EngineCacheError, match="precision"):
        tb.engine_file_name("m", tb.EngineKey("10", "g", "8.7", "int4", (8, 8)))


def _fake_builder(calls: list):
    def build(onnx: Path, engine: Path) -> None:
        calls.append(engine)
        engine.write_bytes(b"engine-for-" + onnx.read_bytes())

    return build


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    p = tmp_path / "m.onnx"
    p.write_bytes(b"graph-v1")
    return p


def test_engine_built_once_then_reused(onnx_file, tmp_path, caplog):
    calls: list = []
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="pasta.tensorrt")
    first = tb.resolve_engine(onnx_file, cache, "m", KEY, _fake_builder(calls))
    assert "building TensorRT engine" in caplog.text and "no engine at" in caplog.text
    second = tb.resolve_engine(onnx_file, cache, "m", KEY, _fake_builder(calls))
    assert first == second and len(calls) == 1  # a valid engine is never rebuilt
    assert "reusing it" in caplog.text
    side = json.loads(tb.sidecar_path(first).read_text())
    assert side["trt_version"] == "10.3.0" and side["onnx_sha256"] == tb.file_sha256(onnx_file)
    assert not list(cache.glob("*.tmp"))


def test_trt_upgrade_rebuilds_with_a_reason(onnx_file, tmp_path, caplog):
    calls: list = []
    tb.resolve_engine(onnx_file, tmp_path, "m", KEY, _fake_builder(calls))
    newer = tb.EngineKey("10.4.0", KEY.gpu_name, KEY.compute_capability, "fp16", (912, 512))
    caplog.set_level(logging.WARNING, logger="pasta.tensorrt")
    tb.resolve_engine(onnx_file, tmp_path, "m", newer, _fake_builder(calls))
    assert len(calls) == 2
    assert "trt_version 10.3.0 (engine) != 10.4.0 (now)" in caplog.text


def test_no_rebuild_raises_with_the_mismatch(onnx_file, tmp_path):
    tb.resolve_engine(onnx_file, tmp_path, "m", KEY, _fake_builder([]))
    other_gpu = tb.EngineKey("10.3.0", "NVIDIA RTX 4090", "8.9", "fp16", (912, 512))
    with pytest.raises(tb.EngineCacheError, match=r"rebuilding is disabled.*compute_capability "
                                                   r"8\.7 \(engine\) != 8\.9"):
        tb.resolve_engine(onnx_file, tmp_path, "m", other_gpu, _fake_builder([]), rebuild=False)


def test_changed_onnx_invalidates_the_engine(onnx_file, tmp_path):
    calls: list = []
    engine = tb.resolve_engine(onnx_file, tmp_path, "m", KEY, _fake_builder(calls))
    onnx_file.write_bytes(b"graph-v2")
    key = tb.EngineKey(**{**KEY.__dict__, "onnx_sha256": tb.file_sha256(onnx_file)})
    valid, reason = tb.check_engine(engine, key)
    assert not valid and "onnx_sha256" in reason
    tb.resolve_engine(onnx_file, tmp_path, "m", KEY, _fake_builder(calls))
    assert len(calls) == 2 and engine.read_bytes() == b"engine-for-graph-v2"


def test_check_engine_reasons(tmp_path):
    engine = tmp_path / "e.engine"
    assert "no engine" in tb.check_engine(engine, KEY)[1]
    engine.write_bytes(b"")
    assert "empty" in tb.check_engine(engine, KEY)[1]
    engine.write_bytes(b"x")
    assert "no sidecar" in tb.check_engine(engine, KEY)[1]
    tb.sidecar_path(engine).write_text("{not json")
    assert "unreadable" in tb.check_engine(engine, KEY)[1]
    tb.write_sidecar(engine, KEY)
    assert tb.check_engine(engine, KEY) == (True, "valid")


def test_failed_build_leaves_no_engine(onnx_file, tmp_path):
    def broken(onnx: Path, engine: Path) -> None:
        engine.write_bytes(b"half")
        raise tb.EngineCacheError("builder crashed")

    with pytest.raises(tb.EngineCacheError, match="crashed"):
        tb.resolve_engine(onnx_file, tmp_path, "m", KEY, broken)
    assert not list(tmp_path.glob("*.engine")) and not list(tmp_path.glob("*.json"))
    with pytest.raises(tb.EngineCacheError, match="export it first"):
        tb.resolve_engine(tmp_path / "missing.onnx", tmp_path, "m", KEY, broken)


# --- ONNX Runtime through the pipeline's interfaces ---------------------------------------

def test_exported_backbone_is_a_drop_in_for_feature_extractor(tmp_path, monkeypatch):
    backbone = build_backbone("dinov2_vits14", tiny=True)
    opts = RuntimeOptions("onnxruntime", tmp_path, device="cpu")
    image = smooth_test_image(150, 90)
    ref = FeatureExtractor(backbone, (140, 84), "cpu", color_weight=2.0)
    ort = FeatureExtractor(ExportedBackbone(backbone, opts, "tiny"), (140, 84), "cpu", 2.0)
    prepared = ref.prepare(image)
    a, b = ref.features([prepared] * 2), ort.features([prepared] * 2)
    assert a.shape == b.shape == (2, 35, 6, 10)
    assert float((a - b).abs().max()) < 1e-4
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    # A second start reuses the cached file (no export).
    import pasta_ros.export.runtime as rt

    monkeypatch.setattr(rt, "export_backbone", lambda *a, **k: pytest.fail("re-exported"))
    again = FeatureExtractor(ExportedBackbone(backbone, opts, "tiny"), (140, 84), "cpu", 2.0)
    assert float((again.features([prepared]) - a[:1]).abs().max()) < 1e-4


def test_graph_of_another_size_is_refused(tmp_path):
    from pasta_ros.core.backends import RunnerBackbone
    from pasta_ros.export.onnx_export import export_backbone

    backbone = build_backbone("dinov2_vits14", tiny=True)
    report = export_backbone("dinov2_vits14", tmp_path, (56, 42), tiny=True)
    rb = RunnerBackbone(open_runner("onnxruntime", report.path, "cpu"), backbone.info)
    assert rb(torch.zeros(2, 3, 42, 56)).shape == (2, 32, 3, 4)  # fixed batch 1, sliced
    with pytest.raises(BackendError, match="exported for 1x3x42x56"):
        rb(torch.zeros(1, 3, 56, 56))


def _calibrated(backbone, k: int = 6):
    from pasta_ros.core.model_io import CalibratedModel

    ext = FeatureExtractor(backbone, (96, 64), "cpu", color_weight=2.0)
    from pasta_ros.export.onnx_export import sample_centers

    centers = sample_centers(ext.features([smooth_test_image(96, 64, 7)]), k=k).numpy()
    p = np.full(k, 1.0 / k)
    return CalibratedModel(backbone.info.name, "", (96, 64), backbone.info.stride, centers, p, p,
                           np.zeros(k, bool), np.zeros(k, bool), np.zeros(4096, np.float32),
                           0.05, 0.1, 0, color_weight=2.0, model_id="test-model")


def test_fused_cluster_map_backend_matches_torch(tmp_path):
    from pasta_ros.core.clustering import assign_clusters

    backbone = build_backbone("efficientnet_lite0")
    model = _calibrated(backbone)
    fused = ExportedClusterMap(model, backbone, RuntimeOptions("onnxruntime", tmp_path, "cpu"))
    ext = FeatureExtractor(backbone, (96, 64), "cpu", color_weight=2.0)
    images = [ext.prepare(smooth_test_image(96, 64, s)) for s in (1, 2)]
    got = fused(images)
    ref = assign_clusters(ext.features(images), torch.from_numpy(model.centers))
    assert got.dtype == torch.int64 and got.shape == ref.shape == (2, 8, 12)
    assert float((got == ref).float().mean()) >= 0.999


# --- GPU only -----------------------------------------------------------------------------

def _has_tensorrt_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_tensorrt_gpu(), reason="needs tensorrt and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_backbone_matches_torch_on_gpu(tmp_path, precision):  # pragma: no cover
    backbone = build_backbone("efficientnet_lite0")
    opts = RuntimeOptions("tensorrt", tmp_path, "cuda", precision=precision)
    exported = ExportedBackbone(backbone, opts, "gpu-test")
    ref = FeatureExtractor(backbone, (96, 64), "cuda", color_weight=2.0)
    trt = FeatureExtractor(exported, (96, 64), "cuda", color_weight=2.0)
    prepared = ref.prepare(smooth_test_image(96, 64))
    a, b = ref.features([prepared]), trt.features([prepared])
    assert b.is_cuda
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert float(cos) > (0.9999 if precision == "fp32" else 0.999)
    engines = list(tmp_path.glob("*.engine"))
    assert len(engines) == 1 and tb.check_engine(engines[0], tb.EngineKey.from_json(
        json.loads(tb.sidecar_path(engines[0]).read_text())))[0]


@pytest.mark.gpu
@pytest.mark.skipif(not _has_tensorrt_gpu(), reason="needs tensorrt and a CUDA GPU")
def test_tensorrt_fused_cluster_map_on_gpu(tmp_path):  # pragma: no cover
    from pasta_ros.core.clustering import assign_clusters

    backbone = build_backbone("efficientnet_lite0")
    model = _calibrated(backbone)
    fused = ExportedClusterMap(model, backbone,
                               RuntimeOptions("tensorrt", tmp_path, "cuda", precision="fp32"))
    ext = FeatureExtractor(build_backbone("efficientnet_lite0"), (96, 64), "cpu", 2.0)
    images = [ext.prepare(smooth_test_image(96, 64, s)) for s in (1, 2)]
    got = fused(images)
    assert got.is_cuda and got.dtype == torch.int64
    ref = assign_clusters(ext.features(images), torch.from_numpy(model.centers))
    assert float((got.cpu() == ref).float().mean()) >= 0.999


# --- pipeline and CLI wiring (active once the config fields are merged) -------------------

def _wired() -> bool:
    from pasta_ros.core.config import PastaConfig

    return hasattr(PastaConfig, "fused_graph") and hasattr(PastaConfig, "engine_dir")


needs_wiring = pytest.mark.skipif(not _wired(), reason="backend config fields not merged yet")


@needs_wiring
@pytest.mark.parametrize("fused", [False, True], ids=["features", "fused"])
def test_pipeline_onnxruntime_matches_torch(tiny_model, tiny_steel, tmp_path, fused):
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.data.images import list_images, read_image
    from pasta_ros.pipeline import PastaPipeline

    image = read_image(list_images(tiny_steel.test_images)[0])
    torch_cfg = PastaConfig(device="cpu", backend="torch")
    ref = PastaPipeline.load(tiny_model, torch_cfg).process(image)
    cfg = PastaConfig(device="cpu", backend="onnxruntime", fused_graph=fused,
                      engine_dir=str(tmp_path))
    got = PastaPipeline.load(tiny_model, cfg).process(image)
    assert (got.cluster_map == ref.cluster_map).mean() >= 0.999
    assert list(tmp_path.glob("fused-*.onnx" if fused else "efficientnet_lite0-*.onnx"))


@needs_wiring
def test_cli_tensorrt_backend_without_tensorrt(run_cli, tiny_model, tiny_steel, tmp_path,
                                               monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code, _, err = run_cli(["segment", "--model", tiny_model, "--images",
                            tiny_steel.test_images, "--out", tmp_path,
                            "--backend", "tensorrt"])
    assert code == 2 and "tensorrt module is not installed" in err
