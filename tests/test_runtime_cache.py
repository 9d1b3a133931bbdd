"""ONNX Runtime as the default backend: parity (fp32, int8) with torch, the cached-graph
sidecar (corrupt file, another model, another size), start-up export, threads, the forced
torch (GPU) fusion path, and the `bench frame` JSON. Agreement thresholds, no timings."""

from __future__ import annotations

import json
import logging
import shutil
from argparse import Namespace

import numpy as np
import pytest
import torch

from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.backends import BackendError
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.export.artifacts import ArtifactKey, sidecar_path, stale_reason
from pasta_ros.export.fused import smooth_test_image
from pasta_ros.export.onnx_export import ExportError, cluster_agreement, sample_centers
from pasta_ros.export.runtime import ExportedBackbone, RuntimeOptions

SIZE = (96, 64)  # network input (W, H), a multiple of stride 8


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def _ort(lite0, cache, tag="w1", **kw) -> ExportedBackbone:
    return ExportedBackbone(lite0, RuntimeOptions("onnxruntime", cache, "cpu", **kw), tag)


def _x(ext: FeatureExtractor, seed: int) -> torch.Tensor:
    from pasta_ros.core.preprocess import to_tensor_batch

    img = ext.prepare(smooth_test_image(*SIZE, seed))
    return to_tensor_batch([img], ext.info.mean, ext.info.std)


def test_ort_fp32_matches_torch_and_writes_a_sidecar(lite0, tmp_path):
    ort = _ort(lite0, tmp_path)
    ref, got = (FeatureExtractor(b, SIZE, "cpu", 2.0) for b in (lite0, ort))
    img = ref.prepare(smooth_test_image(*SIZE, 3))
    a, b = ref.features([img]), got.features([img])
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert float(cos) > 0.99999
    assert cluster_agreement(a, b, sample_centers(a, k=12)) >= 0.999
    onnx = next(tmp_path.glob("*.onnx"))
    side = json.loads(sidecar_path(onnx).read_text())
    assert side["key"] == {"kind": "backbone", "source": "efficientnet_lite0@w1",
                           "input_size": list(SIZE), "precision": "fp32", "graph": 2}
    assert side["parity"]["parity"][0]["cosine"] > 0.9999  # the export's parity report


def test_int8_graph_is_calibrated_on_seen_inputs_and_stays_close(lite0, tmp_path):
    q = _ort(lite0, tmp_path, ort_precision="int8")
    q.collect_inputs(6)
    ext = FeatureExtractor(lite0, SIZE, "cpu", 0.0)
    xs = [_x(ext, s) for s in range(6)]
    with pytest.raises(ExportError, match="no baseline images"):
        _ort(lite0, tmp_path / "other", ort_precision="int8").prepare(SIZE)
    with torch.inference_mode():
        for x in xs:  # as in calibration: fp32, inputs kept
            q(x)
    assert not list(tmp_path.glob("*-int8.onnx"))
    q.prepare(SIZE)  # after calibration: int8 from the kept inputs
    int8 = next(tmp_path.glob("*-int8.onnx"))
    side = json.loads(sidecar_path(int8).read_text())
    assert side["key"]["precision"] == "int8" and side["parity"]["calibration_inputs"] == 4
    with torch.inference_mode():
        a, b = lite0(xs[-1]), q(xs[-1])
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert float(cos) > 0.95  # int8: close, not equal
    assert cluster_agreement(a, b, sample_centers(a, k=8)) >= 0.7


def _exported(lite0, cache, **kw):
    ort = _ort(lite0, cache, **kw)
    ort.prepare(SIZE)
    return next(p for p in cache.glob("*.onnx")), ort


def test_corrupt_cached_graph_is_rebuilt_or_refused(lite0, tmp_path, caplog):
    onnx, _ = _exported(lite0, tmp_path)
    good = onnx.read_bytes()
    onnx.write_bytes(good[: len(good) // 2])  # truncated: a crash mid-copy
    key = ArtifactKey("backbone", "efficientnet_lite0@w1", SIZE)
    assert "sha256" in stale_reason(onnx, key)
    with pytest.raises(BackendError, match="corrupt or replaced"):
        _ort(lite0, tmp_path, rebuild=False).prepare(SIZE)
    with caplog.at_level(logging.WARNING, logger="pasta.export"):
        _ort(lite0, tmp_path).prepare(SIZE)
    assert "rebuilding" in caplog.text and stale_reason(onnx, key) is None


def test_graph_of_another_model_or_size_is_never_used(lite0, tmp_path):
    onnx, _ = _exported(lite0, tmp_path)
    # Another size's file (and sidecar) copied under this size's name.
    other = onnx.with_name(onnx.name.replace("96x64", "128x64"))
    shutil.copy(onnx, other)
    shutil.copy(sidecar_path(onnx), sidecar_path(other))
    with pytest.raises(BackendError, match="input_size"):
        _ort(lite0, tmp_path, rebuild=False).prepare((128, 64))
    # Another model's (weights') sidecar beside this file.
    side = json.loads(sidecar_path(onnx).read_text())
    side["key"]["source"] = "efficientnet_lite0@other-weights"
    sidecar_path(onnx).write_text(json.dumps(side))
    with pytest.raises(BackendError, match="source"):
        _ort(lite0, tmp_path, rebuild=False).prepare(SIZE)
    # No sidecar at all: rebuilt (a file of unknown origin is not trusted).
    sidecar_path(onnx).unlink()
    _ort(lite0, tmp_path).prepare(SIZE)
    assert stale_reason(onnx, ArtifactKey("backbone", "efficientnet_lite0@w1", SIZE)) is None


def test_pipeline_exports_at_load_not_on_the_first_frame(tiny_model, tiny_steel, tmp_path,
                                                         monkeypatch):
    import pasta_ros.export.runtime as rt
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.data.images import list_images, read_image
    from pasta_ros.pipeline import PastaPipeline

    pipe = PastaPipeline.load(tiny_model, PastaConfig(device="cpu", engine_dir=str(tmp_path)))
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    assert sidecar_path(next(tmp_path.glob("*.onnx"))).is_file()
    monkeypatch.setattr(rt, "export_backbone", lambda *a, **k: pytest.fail("exported late"))
    img = read_image(list_images(tiny_steel.test_images)[0])
    assert pipe.process(img).labels.shape == (128, 224)


def test_calibration_leaves_valid_graphs_beside_the_model(tiny_model):
    """The feature graph (calibration's own backbone) and the fused frame graph (the default
    frame path), each with its sidecar: loading the model later exports nothing."""
    graphs = sorted((tiny_model / "engines").glob("*.onnx"))
    assert len(graphs) == 2 and all(sidecar_path(g).is_file() for g in graphs)
    assert sum(g.name.startswith("fused-") for g in graphs) == 1


def test_threads_are_set_once_for_every_library():
    import cv2

    from pasta_ros.core import threads

    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert threads.process_threads() == 1
        try:
            import numba
            assert numba.get_num_threads() == 1
        except ImportError:
            pass
    finally:
        threads.configure_threads(before)


def test_threads_hold_for_torch_when_its_pool_already_started():
    """A fresh process whose torch pool started at all cores: configure_threads(1) must leave
    torch at 1 (numba's OpenMP layer used to reset it when set after torch)."""
    import subprocess
    import sys

    code = ("import torch; torch.get_num_threads(); "
            "from pasta_ros.core.threads import configure_threads; configure_threads(1); "
            "import numba; print(torch.get_num_threads(), numba.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["1", "1"]


def test_threads_env(monkeypatch):
    from pasta_ros.core.threads import resolve_threads

    monkeypatch.setenv("PASTA_THREADS", "3")
    assert resolve_threads(0) == 3 and resolve_threads(2) == 2
    monkeypatch.setenv("PASTA_THREADS", "many")
    assert resolve_threads(0) >= 1


@pytest.mark.parametrize("seed", [0, 1])
def test_forced_torch_fusion_path_equals_the_compiled_kernels(seed):
    from pasta_ros.bench.pasta import synthetic_instances
    from pasta_ros.core.fusion import fuse

    rng = np.random.default_rng(seed)
    ids = synthetic_instances(128, 224, 9, rng)
    patches = rng.random((16, 28)) < 0.3
    a = fuse(ids, patches, 0.2, compiled=True)
    b = fuse(ids, torch.from_numpy(patches), 0.2, torch_path=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [(i.label, i.bbox, i.area) for i in a.instances] == \
        [(i.label, i.bbox, i.area) for i in b.instances]


def test_bench_frame_json_keys_on_a_tiny_frame():
    from pasta_ros.bench.frame import bench_frame

    out = bench_frame(Namespace(repeats=2, device="cpu", frame_size=(160, 96), n_baseline=6))
    stages = {"preprocess", "backbone", "assign", "segment", "fusion", "total"}
    assert stages <= set(out["default"]) and stages <= set(out["reference"])
    assert out["speedup"] == pytest.approx(out["reference"]["total"] / out["default"]["total"],
                                           rel=0.02)
    assert out["default_path"]["backend"] == "onnxruntime"
    assert out["reference_path"]["backend"] == "torch"
    assert out["labels_agree_pct"] >= 99.0


def test_installed_graphs_stay_valid_beside_a_new_model(lite0, tmp_path):
    _, ort = _exported(lite0, tmp_path / "cache")
    (copied,) = ort.install(tmp_path / "model" / "engines")
    assert stale_reason(copied, ArtifactKey("backbone", "efficientnet_lite0@w1", SIZE)) is None


_BUILD_IN_CHILD = """
import sys
from pathlib import Path
from pasta_ros.core.backbones import build_backbone
from pasta_ros.export.runtime import ExportedBackbone, RuntimeOptions
ort = ExportedBackbone(build_backbone("efficientnet_lite0"),
                       RuntimeOptions("onnxruntime", Path(sys.argv[1]), "cpu"), "w1")
ort.prepare((96, 64))
print("ok")
"""


def test_two_processes_building_one_cache_leave_one_valid_graph(tmp_path):
    """Several cameras' nodes may share a cache: each builds under a private name and renames
    it into place, so both succeed and the file left is whole and matches its sidecar."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_IN_CHILD, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    graphs = sorted(tmp_path.glob("*.onnx"))
    assert len(graphs) == 1 and not list(tmp_path.glob("*.tmp*")), sorted(tmp_path.iterdir())
    key = ArtifactKey("backbone", "efficientnet_lite0@w1", SIZE, "fp32")
    assert stale_reason(graphs[0], key) is None
