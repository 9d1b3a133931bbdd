"""`pasta bench segmenter`: the weight-free segmenter's compiled path vs its numpy path.

The model and frames of ``pasta bench frame`` (synthetic steel at 910x512, the default
config); the cluster maps come from the default pipeline once, then each frame is segmented
by both paths in turn (alternating, so load from other processes hits both alike), alone and
with the material-aware split the default config wraps around it, and the compiled path with
the other rule for touching objects (``split_edges`` on <-> off: ``compiled_edge_seeds`` or
``compiled_distance_seeds``). JSON: median ms per path, ``speedup`` (numpy / compiled),
``ids_agree_pct`` (pixels with the same instance id, compiled vs numpy).
"""

from __future__ import annotations

import copy
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

from pasta_ros.bench.frame import FRAME, bench_config, calibrated_model
from pasta_ros.core.config import PastaConfig


def _paths(segmenter) -> dict:
    """{name: segment function}: compiled and numpy, alone and inside the instance split;
    the compiled path with the other touching-object rule."""
    inner = getattr(segmenter, "inner", segmenter)
    exact_inner = copy.copy(inner)
    exact_inner.compiled = False
    other = copy.copy(inner)
    # the config has edge seeds off: compare with the schema's default threshold
    other.split_edges = 0.0 if inner.split_edges > 0 else PastaConfig().split_edges
    paths = {"compiled": inner.segment, "numpy": exact_inner.segment,
             "compiled_distance_seeds" if inner.split_edges > 0 else "compiled_edge_seeds":
                 other.segment}
    if inner is not segmenter:
        exact = copy.copy(segmenter)
        exact.inner = exact_inner
        paths.update({"compiled+split": segmenter.segment, "numpy+split": exact.segment})
    return paths


def bench_segmenter(args: Namespace) -> dict:
    """Median ms of each path on the same frames; see the module doc."""
    from pasta_ros.bench.machine import machine
    from pasta_ros.core.threads import configure_threads
    from pasta_ros.pipeline import PastaPipeline

    size = tuple(getattr(args, "frame_size", None) or FRAME)
    cfg = bench_config(args).replace(input_width=size[0], input_height=size[1])
    configure_threads(cfg.threads)
    repeats = max(1, int(args.repeats))
    with tempfile.TemporaryDirectory(prefix="pasta_bench_segmenter_") as tmp:
        model_dir, frames = calibrated_model(cfg, Path(tmp), size=size,
                                             n_baseline=getattr(args, "n_baseline", 12))
        pipe = PastaPipeline.load(model_dir, cfg)
    inputs = [(pipe.extractor.prepare(f), torch.from_numpy(pipe.process(f).cluster_map))
              for f in frames["test"]]
    paths = _paths(pipe.segmenter)
    if not getattr(pipe.segmenter, "inner", pipe.segmenter).compiled:
        raise RuntimeError("the compiled segmenter path is not available (numba missing)")
    samples = {name: [] for name in paths}
    same = total = 0
    for fn in paths.values():  # warm-up (compiles the kernels)
        fn(*inputs[0])
    for i in range(repeats):
        image, cmap = inputs[i % len(inputs)]
        out = {}
        for name, fn in paths.items():
            t0 = time.perf_counter()
            out[name] = fn(image, cmap)
            samples[name].append((time.perf_counter() - t0) * 1e3)
        same += int(np.count_nonzero(out["compiled"] == out["numpy"]))
        total += out["numpy"].size
    med = {name: round(float(np.median(v)), 2) for name, v in samples.items()}
    result = {"bench": "segmenter", "frame": f"{size[0]}x{size[1]}",
              "segmenter": pipe.segmenter.name, "median_ms": med,
              "p95_ms": {n: round(float(np.percentile(v, 95)), 2) for n, v in samples.items()},
              "speedup": round(med["numpy"] / med["compiled"], 2),
              "ids_agree_pct": round(100.0 * same / max(total, 1), 3),
              "repeats": repeats, **machine()}
    if "numpy+split" in med:
        result["speedup_with_split"] = round(med["numpy+split"] / med["compiled+split"], 2)
    return result
