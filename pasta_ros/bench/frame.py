"""`pasta bench frame`: the default pipeline and the reference path, side by side in one run.

Both pipelines load the same calibrated model (synthetic steel frames at 910x512, calibrated
with the default settings) and process the same frames, alternating frame by frame so that
load from other processes hits both alike. The reference is today's former default: torch
eager, float32, on the same device. JSON: ``default.<stage>`` and ``reference.<stage>``
median ms (``total`` included), ``speedup`` = reference.total / default.total, and
``labels_agree_pct`` (pixels with the same label) over all timed frames.
"""

from __future__ import annotations

import tempfile
from argparse import Namespace
from pathlib import Path

import numpy as np

from pasta_ros.core.config import PastaConfig

FRAME = (910, 512)


def bench_config(args: Namespace) -> PastaConfig:
    """The default config, with the bench's ``--device/--backend/--ort-precision/--threads/
    --fused-graph`` when given."""
    changes = {k: getattr(args, k) for k in ("device", "backend", "ort_precision", "threads")
               if getattr(args, k, None) is not None}
    if getattr(args, "fused_graph", None) is not None:
        changes["fused_graph"] = bool(args.fused_graph)
    if changes.get("device") == "cuda" and "backend" not in changes:
        changes["backend"] = gpu_backend()
    return PastaConfig().replace(**changes)


def gpu_backend() -> str:
    """The fastest backend this GPU machine has: tensorrt, else onnxruntime with a CUDA
    provider, else torch (then default and reference differ only in nothing but noise)."""
    from pasta_ros.core.backends import BackendError, check_backend

    for name in ("tensorrt", "onnxruntime"):
        try:
            check_backend(name, "cuda")
            if name == "onnxruntime":
                import onnxruntime

                if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                    continue
            return name
        except BackendError:
            continue
    return "torch"


def calibrated_model(cfg: PastaConfig, root: Path, *, size: tuple[int, int] = FRAME,
                     n_baseline: int = 12) -> tuple[Path, dict]:
    """Synthetic steel set under ``root`` and a model calibrated on it with ``cfg`` (graphs
    cached beside it, as ``pasta calibrate`` does); (model dir, dataset layout's frames)."""
    from pasta_ros.core.calibration import calibrate
    from pasta_ros.core.model_io import save_model
    from pasta_ros.data.synth import generate
    from pasta_ros.pipeline import build_extractor, prepare_runtime
    from pasta_ros.sources import folder_source

    lay = generate("steel", root / "data", seed=0, width=size[0], height=size[1],
                   n_baseline=n_baseline, n_reference=6, n_empty=3, n_test=6)
    out = root / "model"
    ext = build_extractor(cfg, cache_dir=out / "engines")
    model = calibrate(ext, folder_source(lay.baseline), folder_source(lay.reference),
                      folder_source(lay.empty), cfg, quiet=True)
    save_model(model, out)
    prepare_runtime(ext.backbone, model.input_size, model.stride)
    frames = {"test": [img for _, img in folder_source(lay.test_images)()],
              "reference": [img for _, img in folder_source(lay.reference)()]}
    return out, frames


# ``--also``: extra variants of the default path, timed in the same run (alternating)
VARIANTS: dict[str, dict] = {"fused": {"fused_graph": True}, "feature": {"fused_graph": False}}


def _medians(samples: dict[str, list[float]]) -> dict[str, float]:
    out = {k: round(float(np.median(v)), 2) for k, v in samples.items()}
    out["post_backbone"] = round(float(np.median(
        np.add(samples["assign"], samples["fusion"]))), 3)
    return out


def variant_configs(cfg: PastaConfig, also: str | None) -> dict[str, PastaConfig]:
    """``default`` (= ``cfg``), the ``--also`` variants (comma-separated names of
    :data:`VARIANTS`) and ``reference`` (torch eager fp32), in the order they are timed."""
    names = [n.strip() for n in (also or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown --also variant(s) {unknown}; choose from {list(VARIANTS)}")
    out = {"default": cfg}
    out.update({n: cfg.replace(**VARIANTS[n]) for n in names})
    out["reference"] = cfg.replace(backend="torch", fused_graph=False)
    return out


class _Agreement:
    """Pixels (labels) and patches (cluster maps) equal to the reference's, summed."""

    def __init__(self) -> None:
        self.same = self.total = self.same_c = self.total_c = 0

    def add(self, a, b) -> None:
        self.same += int((a.labels == b.labels).sum())
        self.total += a.labels.size
        self.same_c += int((a.cluster_map == b.cluster_map).sum())
        self.total_c += a.cluster_map.size

    def pct(self) -> dict[str, float]:
        return {"labels_agree_pct": round(100.0 * self.same / max(self.total, 1), 3),
                "cluster_map_agree_pct": round(100.0 * self.same_c / max(self.total_c, 1), 3)}


def _time_pipelines(pipes: dict, test: list[np.ndarray], repeats: int, vote,
                    ) -> tuple[dict[str, dict[str, list[float]]], dict[str, _Agreement]]:
    """Every pipeline on the same frame, frame by frame; per-stage samples and agreement
    with ``reference`` for each non-reference pipeline."""
    for pipe in pipes.values():
        pipe.process(test[0], icas=vote)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in pipes}
    agree = {name: _Agreement() for name in pipes if name != "reference"}
    for i in range(repeats):
        frame = test[i % len(test)]
        results = {name: pipe.process(frame, icas=vote) for name, pipe in pipes.items()}
        for name, r in results.items():
            for key, ms in r.timings.items():
                samples[name].setdefault(key, []).append(ms)
            if name in agree:
                agree[name].add(r, results["reference"])
    return samples, agree


def _path_info(cfg: PastaConfig, pipe) -> dict:
    runtime = pipe.cluster_map_fn if pipe.cluster_map_fn is not None else pipe.extractor.backbone
    graphs = {f"{s[0]}x{s[1]}": a for s, a in getattr(runtime, "artifacts", {}).items()}
    return {"backend": cfg.backend, "ort_precision": cfg.ort_precision,
            "fused_graph": cfg.fused_graph, "device": cfg.device, "threads": cfg.threads,
            "graphs": graphs}


def bench_frame(args: Namespace) -> dict:
    """Default vs reference (torch eager fp32) per stage on the same frames; see module doc.
    ``args.also``: variants of the default path timed in the same run (``fused``,
    ``feature``), reported under ``variants`` with their speed-up and agreement."""
    from pasta_ros.bench.machine import machine
    from pasta_ros.bench.pasta import icas_vote
    from pasta_ros.pipeline import PastaPipeline

    size = tuple(getattr(args, "frame_size", None) or FRAME)
    cfg = bench_config(args).replace(input_width=size[0], input_height=size[1])
    cfgs = variant_configs(cfg, getattr(args, "also", None))
    repeats = max(1, int(args.repeats))
    with tempfile.TemporaryDirectory(prefix="pasta_bench_frame_") as tmp:
        model_dir, frames = calibrated_model(cfg, Path(tmp), size=size,
                                             n_baseline=getattr(args, "n_baseline", 12))
        pipes = {name: PastaPipeline.load(model_dir, c) for name, c in cfgs.items()}
        vote = icas_vote(getattr(args, "icas", "off"), frames["reference"][:4])
        test = frames["test"]
        samples, agree = _time_pipelines(pipes, test, repeats, vote)
    med = {name: _medians(s) for name, s in samples.items()}
    ref_total = med["reference"]["total"]
    variants = {name: {"path": _path_info(cfgs[name], pipes[name]), **med[name],
                       "speedup": round(ref_total / med[name]["total"], 2),
                       "p95_total_ms": round(float(np.percentile(samples[name]["total"], 95)), 2),
                       **agree[name].pct()}
                for name in cfgs if name not in ("default", "reference")}
    default = pipes["default"]
    return {"bench": "frame", "frame": f"{size[0]}x{size[1]}",
            "network_input": "x".join(map(str, default.extractor.size_for(test[0]))),
            "backbone": cfg.backbone, "icas": getattr(args, "icas", "off"),
            "default_path": _path_info(cfg, default),
            "reference_path": {"backend": "torch", "precision": "fp32 eager",
                               "device": cfg.device},
            "default": med["default"], "reference": med["reference"],
            "speedup": round(ref_total / med["default"]["total"], 2),
            **agree["default"].pct(),
            "p95_total_ms": {side: round(float(np.percentile(samples[side]["total"], 95)), 2)
                             for side in ("default", "reference")},
            "variants": variants, "repeats": repeats, **machine()}
