"""`pasta bench backends`: torch eager vs ONNX Runtime, side by side in one run.

1. efficientnet_lite0 backbone at 910x512 (912x512 after rounding to the stride): latency of
   torch eager and ONNX Runtime (same thread count, ORT spinning off), ratio, max abs error,
   cosine;
2. the fused graph (pixels -> cluster map, K=20 centres from K-Means on synthetic steel frames,
   colour weight 2.0) vs the torch path (FeatureExtractor.features + assign_clusters):
   latency, ratio and cluster-map agreement over several frames;
3. a tiny random SAM 3: per-part latency (image encoder, text encoder, decoder) in torch and
   ONNX Runtime, and the per-frame cost with the cached prompt vs re-encoding it every frame.

Measurements alternate between the two sides each repeat, so load from other processes on
the machine hits both alike; medians are reported.
"""

from __future__ import annotations

import tempfile
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BENCH_SIZE = (910, 512)


def _paired(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, run round-robin ``repeats`` times after one warm-up."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 2) for k, v in samples.items()}


def _frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    from pasta_ros.data.synth import render_scene

    rng = np.random.default_rng(0)
    return [render_scene("steel", rng, size[0], size[1], int(rng.integers(3, 9)),
                         int(rng.integers(0, 3)))[0] for _ in range(n)]


def bench_backbone(tmp: Path, frames: list[np.ndarray], repeats: int, threads: int) -> dict:
    from pasta_ros.core.backbones import build_backbone
    from pasta_ros.core.backends.base import RunnerBackbone
    from pasta_ros.core.backends.onnxruntime import OrtRunner
    from pasta_ros.core.features import FeatureExtractor
    from pasta_ros.export.onnx_export import compare, export_backbone

    backbone = build_backbone("efficientnet_lite0")
    ext = FeatureExtractor(backbone, BENCH_SIZE, "cpu")
    prepared = ext.prepare(frames[0])
    h, w = prepared.shape[:2]
    report = export_backbone("efficientnet_lite0", tmp, (w, h), backbone=backbone)
    ort = RunnerBackbone(OrtRunner(report.path, device="cpu", threads=threads), backbone.info)
    from pasta_ros.core.preprocess import to_tensor_batch

    x = to_tensor_batch([prepared], backbone.info.mean, backbone.info.std)
    with torch.inference_mode():
        times = _paired({"torch_ms": lambda: backbone(x), "onnxruntime_ms": lambda: ort(x)},
                        repeats)
        parity = compare("features", backbone(x).numpy(), ort(x).numpy())
    return {"input": f"{w}x{h}", **times,
            "speedup": round(times["torch_ms"] / times["onnxruntime_ms"], 2),
            "max_abs_error": parity.max_abs, "cosine": parity.cosine,
            "export_agreement_sampled_centres": report.parity[0].agreement}


def bench_fused(tmp: Path, frames: list[np.ndarray], repeats: int, threads: int) -> dict:
    from pasta_ros.core.backbones import build_backbone
    from pasta_ros.core.backends.base import ClusterMapRunner
    from pasta_ros.core.backends.onnxruntime import OrtRunner
    from pasta_ros.core.clustering import assign_clusters, fit_kmeans, grid_to_rows
    from pasta_ros.core.features import FeatureExtractor
    from pasta_ros.export.fused import FusedClusterNet, export_fused

    backbone = build_backbone("efficientnet_lite0")
    ext = FeatureExtractor(backbone, BENCH_SIZE, "cpu", color_weight=2.0)
    prepared = [ext.prepare(f) for f in frames]
    rows = torch.cat([grid_to_rows(ext.features([p])) for p in prepared[:3]])
    centers = torch.from_numpy(fit_kmeans(rows.numpy(), 20, seed=0))
    net = FusedClusterNet(backbone, centers, 2.0).eval()
    h, w = prepared[0].shape[:2]
    report = export_fused(net, tmp / "fused.onnx", (w, h), images=prepared[:2])
    fused = ClusterMapRunner(OrtRunner(report.path, device="cpu", threads=threads))

    def torch_path() -> torch.Tensor:
        return assign_clusters(ext.features(prepared[:1]), centers)

    with torch.inference_mode():
        times = _paired({"torch_ms": torch_path, "onnxruntime_fused_ms": lambda:
                         fused(prepared[:1])}, repeats)
        agree = [float((assign_clusters(ext.features([p]), centers) == fused([p])).float()
                       .mean()) for p in prepared]
    return {"input": f"{w}x{h}", "clusters": 20, "color_weight": 2.0, **times,
            "speedup": round(times["torch_ms"] / times["onnxruntime_fused_ms"], 2),
            "cluster_map_agreement": round(float(np.mean(agree)), 6),
            "min_frame_agreement": round(min(agree), 6), "frames": len(prepared)}


def bench_sam3(tmp: Path, frames: list[np.ndarray], repeats: int, threads: int) -> dict:
    from pasta_ros.core.segmenters.sam3 import DEFAULT_PROMPT, Sam3Segmenter
    from pasta_ros.core.segmenters.sam3_tiny import tiny_model, tiny_tokenizer
    from pasta_ros.export.onnx_export import ort_session
    from pasta_ros.export.sam3_export import (
        DecoderPart,
        ImageEncoderPart,
        Sam3OnnxParts,
        TextEncoderPart,
        example_inputs,
        export_sam3,
    )

    model, tok = tiny_model(), tiny_tokenizer()
    export_sam3(model, tok, DEFAULT_PROMPT, tmp / "sam3")
    parts = Sam3OnnxParts(tmp / "sam3", threads=threads)
    text_sess = ort_session(tmp / "sam3" / "sam3_text_encoder.onnx", threads=threads)
    ex = example_inputs(model, tok, DEFAULT_PROMPT)
    img, txt, dec = ImageEncoderPart(model), TextEncoderPart(model), DecoderPart(model)
    with torch.inference_mode():
        fpn = img(ex.pixel_values)
        text = txt(ex.input_ids, ex.attention_mask)
        px = ex.pixel_values.numpy()
        fpn_np = parts.encode_image(px)
        ids, mask = ex.input_ids.numpy(), ex.attention_mask.numpy()
        times = _paired({
            "torch_image_encoder_ms": lambda: img(ex.pixel_values),
            "torch_text_encoder_ms": lambda: txt(ex.input_ids, ex.attention_mask),
            "torch_decoder_ms": lambda: dec(*fpn, text, ex.attention_mask),
            "ort_image_encoder_ms": lambda: parts.encode_image(px),
            "ort_text_encoder_ms": lambda: text_sess.run(None, {"input_ids": ids,
                                                                "attention_mask": mask}),
            "ort_decoder_ms": lambda: parts.decode(fpn_np)}, repeats)
        seg = Sam3Segmenter(model, tok, DEFAULT_PROMPT, score_threshold=0.0, min_area=0)
        frame = frames[0]

        def uncached() -> None:
            seg._prompt_cache = None  # noqa: SLF001 - measuring the cost the cache removes
            seg.segment(frame)

        frame_times = _paired({"segment_cached_prompt_ms": lambda: seg.segment(frame),
                               "segment_prompt_every_frame_ms": uncached}, repeats)
        calls: list[int] = []
        hook = model.text_encoder.register_forward_hook(lambda *_: calls.append(1))
        fresh = Sam3Segmenter(model, tok, DEFAULT_PROMPT, score_threshold=0.0, min_area=0)
        for f in frames:
            fresh.segment(f)
        hook.remove()
    out: dict = {"model": "tiny random Sam3Model (tests' config), 112x112 input",
                 "parameters": sum(p.numel() for p in model.parameters()), **times,
                 **frame_times, "text_encoder_runs": {"frames": len(frames),
                                                      "text_encoder_calls": len(calls)}}
    for side in ("torch", "ort"):
        cached = times[f"{side}_image_encoder_ms"] + times[f"{side}_decoder_ms"]
        out[f"{side}_frame_cached_prompt_ms"] = round(cached, 2)
        out[f"{side}_frame_uncached_prompt_ms"] = round(
            cached + times[f"{side}_text_encoder_ms"], 2)
    return out


def bench_backends(args: Namespace) -> dict:
    """Run the three comparisons above; ``args.repeats`` (timed runs per side).
    ``--backend tensorrt`` (or ``--device cuda``): the GPU comparison instead."""
    from pasta_ros.bench.machine import machine

    if getattr(args, "backend", None) == "tensorrt" or getattr(args, "device", None) == "cuda":
        args.backend = getattr(args, "backend", None) or "onnxruntime"
        return bench_backends_gpu(args)

    repeats = max(1, int(getattr(args, "repeats", 10)))
    threads = torch.get_num_threads()
    frames = _frames(4, BENCH_SIZE)
    with tempfile.TemporaryDirectory(prefix="pasta_bench_backends_") as d:
        tmp = Path(d)
        return {"machine": machine(), "repeats": repeats, "threads": threads,
                "backbone_efficientnet_lite0": bench_backbone(tmp, frames, repeats, threads),
                "fused_graph": bench_fused(tmp, frames, repeats, threads),
                "sam3_tiny": bench_sam3(tmp, frames, repeats, threads)}


def bench_backbone_gpu(tmp: Path, frames: list[np.ndarray], repeats: int, backend: str,
                       precision: str) -> dict:  # pragma: no cover - needs a CUDA GPU
    """efficientnet_lite0 on the GPU: torch eager (cuda, fp32) vs ``backend`` (tensorrt, or
    onnxruntime with its CUDA provider) through ExportedBackbone, with the same keys as the
    CPU comparison (``<backend>_ms`` in place of ``onnxruntime_ms``)."""
    from pasta_ros.core.backbones import build_backbone
    from pasta_ros.core.features import FeatureExtractor
    from pasta_ros.core.preprocess import to_tensor_batch
    from pasta_ros.export.onnx_export import compare
    from pasta_ros.export.runtime import ExportedBackbone, RuntimeOptions

    backbone = build_backbone("efficientnet_lite0")
    exported = ExportedBackbone(backbone, RuntimeOptions(backend, tmp, "cuda", precision), "gpu")
    ext = FeatureExtractor(backbone, BENCH_SIZE, "cuda")
    prepared = ext.prepare(frames[0])
    h, w = prepared.shape[:2]
    exported.prepare((w, h))  # export + engine build outside the timing
    x = to_tensor_batch([prepared], backbone.info.mean, backbone.info.std, "cuda")

    def synced(fn):
        def run():
            out = fn(x)
            torch.cuda.synchronize()
            return out
        return run

    with torch.inference_mode():
        times = _paired({"torch_ms": synced(ext.backbone), f"{backend}_ms": synced(exported)},
                        repeats)
        parity = compare("features", ext.backbone(x).float().cpu().numpy(),
                         exported(x).float().cpu().numpy())
    return {"input": f"{w}x{h}", "device": torch.cuda.get_device_name(0),
            "precision": precision, **times,
            "speedup": round(times["torch_ms"] / times[f"{backend}_ms"], 2),
            "max_abs_error": parity.max_abs, "cosine": parity.cosine}


def bench_backends_gpu(args: Namespace) -> dict:  # pragma: no cover - needs a CUDA GPU
    """`pasta bench backends --backend tensorrt` (or onnxruntime --device cuda): the backbone
    on the GPU; BackendError naming what is missing on a machine without one."""
    from pasta_ros.bench.machine import machine
    from pasta_ros.core.backends import check_backend

    backend = args.backend
    check_backend(backend, "cuda")
    repeats = max(1, int(getattr(args, "repeats", 10)))
    precision = getattr(args, "precision", None) or "fp16"
    frames = _frames(2, BENCH_SIZE)
    with tempfile.TemporaryDirectory(prefix="pasta_bench_gpu_") as d:
        return {"machine": machine(), "repeats": repeats, "backend": backend,
                "backbone_efficientnet_lite0": bench_backbone_gpu(Path(d), frames, repeats,
                                                                  backend, precision)}
