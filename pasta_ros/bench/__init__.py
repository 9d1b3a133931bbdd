"""``pasta bench <name>``: every speed, memory and quality benchmark, one registry.

A benchmark is a function ``(argparse.Namespace) -> dict`` (JSON-able, with a ``machine``
entry from :func:`pasta_ros.bench.machine.machine`) in a module of this package. A new one is
a module here plus one :data:`BENCHMARKS` entry; its options go in ``pasta_ros/cli/bench.py``.
Modules are imported only when their benchmark runs (``pasta --help`` stays fast); they are
modules of this package only, so the import check sees every edge they add.
"""

from __future__ import annotations

import importlib
from argparse import Namespace
from typing import NamedTuple


class Benchmark(NamedTuple):
    module: str  # module of this package
    function: str
    help: str


BENCHMARKS: dict[str, Benchmark] = {
    "fusion": Benchmark("pasta", "bench_fusion",
                        "assignment + fusion at 910x512 vs a straightforward reference"),
    "frame": Benchmark("frame", "bench_frame", "whole-frame latency per stage: the default "
                       "pipeline vs the torch-eager reference on the same frames"),
    "segmenter": Benchmark("segmenter", "bench_segmenter", "the weight-free segmenter's "
                           "compiled path vs its numpy path on the frames of `frame`"),
    "memory": Benchmark("pasta", "bench_memory", "peak RSS of calibration for N/10 and N images"),
    "backends": Benchmark("backends", "bench_backends",
                          "torch vs ONNX Runtime (vs TensorRT on a GPU) per exported graph"),
    "ros": Benchmark("ros", "bench_ros", "the node over DDS: rate, latency, losses"),
    "soak": Benchmark("soak", "bench_soak", "the node under a steady camera for --frames "
                      "frames: RSS every --sample-s s, counters that add up"),
    "icas_share": Benchmark("icas_share", "bench_icas_share", "the node's iCAS vote on "
                            "PASTA's backbone features (one pass) vs its own encoder"),
    "icas": Benchmark("icas", "bench_icas", "iCAS quality on held-out textures, decoder latency"),
}


def run_benchmark(name: str, args: Namespace) -> dict:
    """Run benchmark ``name`` (a key of :data:`BENCHMARKS`) with the parsed options."""
    entry = BENCHMARKS[name]
    module = importlib.import_module(f"{__name__}.{entry.module}")
    return getattr(module, entry.function)(args)
