"""Issue 10: where the iCAS vote's decoder graph spends its time (one CPU thread).

The shipped checkpoint's decoder exported for one feature grid (``export_decoder``, normal
prompt: N_p 1, N_n 1, seeded random inputs), then: median ms of ``session.run`` for torch
eager, the fp32 graph at each ONNX Runtime optimisation level, and the graph with dynamic
int8 weights (per-channel QInt8; max abs difference of its outputs); and the op-type totals of
an ONNX Runtime profile of the fp32 graph. A measurement, not in the package.
Usage: python scripts/profile_icas_decoder.py [--grid 22x38] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from pasta_ros.core.icas.prompting import ICASPredictor
from pasta_ros.export.icas_decoder import DecoderExport, example_inputs, export_decoder

NAMES = ("feats", "prompt", "ntp", "query_idx")
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def session(path: Path, level: str = "all", profile_dir: Path | None = None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = LEVELS[level]
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_dir / "decoder")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def median_ms(fn, runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="22x38", help="feature grid HxW (the node's pooled grid)")
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    grid = tuple(int(x) for x in a.grid.split("x"))
    torch.set_num_threads(1)
    model = ICASPredictor.from_checkpoint().model.eval()
    inputs = example_inputs(model, grid, 1, 1, seed=3)
    feed = {n: t.numpy() for n, t in zip(NAMES, inputs)}
    out: dict = {"grid": list(grid)}
    with tempfile.TemporaryDirectory(prefix="pasta_profile_decoder_") as tmp:
        fp32, int8 = Path(tmp) / "decoder.onnx", Path(tmp) / "decoder_int8.onnx"
        export_decoder(model, fp32, grid, n_prompt=1, n_ntp=1)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        wrapper = DecoderExport(model, 1).eval()
        with torch.no_grad():
            out["torch_ms"] = median_ms(lambda: wrapper(*inputs), a.runs)
        for level in LEVELS:
            s = session(fp32, level)
            out[f"fp32_{level}_ms"] = median_ms(lambda s=s: s.run(None, feed), a.runs)
        s8 = session(int8)
        out["int8_ms"] = median_ms(lambda: s8.run(None, feed), a.runs)
        ref, got = session(fp32).run(None, feed), s8.run(None, feed)
        out["int8_max_abs_diff"] = [float(np.abs(x - y).max()) for x, y in zip(ref, got)]
        prof = session(fp32, profile_dir=Path(tmp))
        for _ in range(a.runs):
            prof.run(None, feed)
        ops: Counter = Counter()
        for event in json.loads(Path(prof.end_profiling()).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                ops[event["args"]["op_name"]] += event["dur"]
        out["profile_us_per_run"] = {k: round(v / a.runs) for k, v in ops.most_common(12)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
