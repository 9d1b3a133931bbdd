"""`pasta bench <name>`: runs a benchmark of :data:`pasta_ros.bench.BENCHMARKS` and prints (and
optionally writes) its JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from pasta_ros.bench import BENCHMARKS, run_benchmark
from pasta_ros.cli.args import parse_ints, parse_size


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``pasta`` sub-parsers; its choices are the benchmark registry."""
    b = sub.add_parser("bench", help=f"benchmarks: {' | '.join(BENCHMARKS)}",
                       description="\n".join(f"{k}: {v.help}" for k, v in BENCHMARKS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("what", choices=tuple(BENCHMARKS))
    b.add_argument("--model", type=Path, help="ros: model dir (default demo_out/model)")
    b.add_argument("--images", type=int, default=1000, help="memory: baseline images")
    b.add_argument("--icas", choices=("off", "replace", "combine"), default="off",
                   help="frame: also run the iCAS vote (shipped checkpoint, 4 normal shots)")
    b.add_argument("--checkpoint", type=Path, help="icas: checkpoint (default: the shipped one)")
    b.add_argument("--seeds", type=parse_ints, default=[0, 1, 2, 3, 4], help="icas: seeds")
    b.add_argument("--device", help="frame: auto | cpu | cuda (default: the config's auto)")
    b.add_argument("--backend", help="frame: the default path's backend; backends: also "
                                     "tensorrt (GPU)")
    b.add_argument("--ort-precision", help="frame: fp32 | int8 for the default path")
    b.add_argument("--fused-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="frame: the default path as one pixels -> cluster-map graph (or not)")
    b.add_argument("--also", help="frame: variants timed in the same run, comma-separated: "
                                  "fused, feature")
    b.add_argument("--threads", type=int, help="threads for torch/ORT/numba/OpenCV (0 = all)")
    b.add_argument("--repeats", type=int, default=50)
    b.add_argument("--frames", type=int, default=10_000, help="soak: frames to send")
    b.add_argument("--rate", type=float, default=10.0, help="soak: camera rate in Hz")
    b.add_argument("--size", type=parse_size, default=(1280, 720), help="soak: frame WxH")
    b.add_argument("--transport", choices=("shm", "default"), default="shm",
                   help="soak: DDS transport (config/fastdds_shm.xml or Fast DDS defaults)")
    b.add_argument("--transports", default="shm",
                   help="ros: DDS transports to measure, comma-separated: shm (the "
                        "config/fastdds_shm.xml profile sorter.launch.py uses), default (Fast "
                        "DDS's built-in transports, which lose large images here)")
    b.add_argument("--sample-s", type=float, default=10.0, help="soak: seconds between "
                                                                "RSS samples")
    b.add_argument("--warmup", type=float, default=0.1, help="soak: share of the run before "
                                                             "RSS growth is measured")
    b.add_argument("--json", type=Path)
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> dict:
    result = run_benchmark(args.what, args)
    if args.json:
        from pasta_ros.evaluation import save_json
        save_json(args.json, result)
    return result
