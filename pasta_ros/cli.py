"""`pasta` command line: synth, calibrate, segment, evaluate, bench, export, and the ROS
clients recalibrate, prompts, echo, play.

A user's mistake (bad path, corrupt model, wrong option) prints one ``error:`` line and
exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pasta_ros.config import BACKBONE_CHOICES, ConfigError, PastaConfig

log = logging.getLogger("pasta")


def parse_size(text: str) -> tuple[int, int]:
    """'910x512' -> (910, 512); an argparse type."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 910x512, got {text!r}") from None
    return w, h


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", choices=None, help=f"one of {', '.join(BACKBONE_CHOICES)} "
                   "(efficientnet_lite0 accepts a :s8+s16 style layer suffix)")
    p.add_argument("--weights", help="local checkpoint (HF snapshot folder or state-dict file)")
    p.add_argument("--clusters", type=int, help="K (default 20)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--input-size", type=parse_size, help="max network input WxH (default 910x512)")
    p.add_argument("--ratio-threshold", type=float, help="anomaly cluster ratio (default 0.05)")
    p.add_argument("--vote-threshold", type=float, help="segment vote threshold (default 0.1)")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, help="images per backbone batch")
    p.add_argument("--min-area", type=int, help="smallest segment in pixels")
    p.add_argument("--backend", help="torch | onnxruntime | tensorrt")
    p.add_argument("--fused-graph", action="store_const", const=True, default=None,
                   help="onnxruntime/tensorrt: pixels -> cluster map in one exported graph")
    p.add_argument("--precision", help="TensorRT engine precision: fp16 | fp32")
    p.add_argument("--engine-dir", help="exported graph / engine cache (default <model>/engines)")
    p.add_argument("--no-engine-rebuild", dest="engine_rebuild", action="store_const",
                   const=False, default=None, help="fail instead of building a stale engine")
    p.add_argument("--segmenter", help="clusters | sam3")
    p.add_argument("--sam3-weights", help="SAM 3 checkpoint folder (HF snapshot)")
    p.add_argument("--sam3-prompt", help="SAM 3 text prompt")
    p.add_argument("--sam3-score-threshold", type=float, help="SAM 3 score threshold (0.5)")
    p.add_argument("--config", type=Path, help="YAML file (ros__parameters form or flat)")
    _remaining_config_args(p)


def _remaining_config_args(p: argparse.ArgumentParser) -> None:
    """A flag for every PastaConfig field that has none above (issue 9: color_weight,
    object_codebook, split_clusters, ...): --name VALUE, or --name / --no-name for bools."""
    from pasta_ros.config import field_specs
    taken = {a.dest for a in p._actions} | {"input_width", "input_height"}
    for f in field_specs():
        if f.name in taken:
            continue
        flag, desc = "--" + f.name.replace("_", "-"), f.metadata["description"]
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action="store_const", const=True, default=None,
                           help=f"{desc} (default {f.default})")
            p.add_argument("--no-" + flag[2:], dest=f.name, action="store_const", const=False,
                           help=f"turn {f.name} off")
        else:
            p.add_argument(flag, dest=f.name, type=type(f.default), default=None,
                           help=f"{desc} (default {f.default})")


def config_from_args(args: argparse.Namespace) -> tuple[PastaConfig, set[str]]:
    """The shared config from a YAML file (optional) plus explicit options; and which
    fields the user set explicitly."""
    values: dict = {}
    if getattr(args, "config", None):
        from pasta_ros.config import load_yaml_config
        values.update(load_yaml_config(args.config))
    names = {"backbone", "weights", "clusters", "seed", "ratio_threshold", "vote_threshold",
             "device", "batch_size", "min_area", "backend", "fused_graph", "precision",
             "engine_dir", "engine_rebuild", "segmenter", "sam3_weights", "sam3_prompt",
             "sam3_score_threshold"}
    from pasta_ros.config import field_specs
    names |= {f.name for f in field_specs()} - {"input_width", "input_height"}
    values.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    if getattr(args, "input_size", None):
        values["input_width"], values["input_height"] = args.input_size
    return PastaConfig.from_dict(values), set(values)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pasta", description=__doc__.splitlines()[0])
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate a synthetic dataset (steel or plants)")
    s.add_argument("--preset", choices=("steel", "plants", "belt_dense_dev", "belt_thin_dev",
                                        "belt_far_dev", "belt_dense", "belt_dense_near",
                                        "belt_thin"), default="steel")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=parse_size, default=(910, 512), help="image WxH")
    for name, default in (("baseline", 80), ("reference", 40), ("empty", 12), ("test", 30)):
        s.add_argument(f"--n-{name}", type=int, default=default)
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    s.add_argument("--touch", type=float, help="conveyor presets: share of objects placed "
                   "touching or overlapping another (0-1)")
    s.add_argument("--thin", type=float, help="conveyor presets: share of wires and rods (0-1)")
    s.add_argument("--scale", type=float, help="conveyor presets: object scale, camera height "
                   "(0.5 high .. 2 low)")
    s.add_argument("--look", help="conveyor presets: belt look (green_pvc, black_rubber, "
                   "tan_canvas, blue_mesh)")
    s.add_argument("--gradient", action=argparse.BooleanOptionalAction, default=None,
                   help="conveyor presets: scene-wide lighting gradient")
    s.add_argument("--blur", action=argparse.BooleanOptionalAction, default=None,
                   help="conveyor presets: motion blur along the belt")

    c = sub.add_parser("calibrate", help="fit PASTA on a baseline and a reference set")
    c.add_argument("--baseline", type=Path, required=True, help="image folder or bag")
    c.add_argument("--reference", type=Path, required=True, help="image folder or bag")
    c.add_argument("--empty", type=Path, help="optional empty-scene folder or bag")
    c.add_argument("--topic", help="image topic when the sets are ROS 2 bags")
    c.add_argument("--out", type=Path, required=True, help="model directory to write")
    _config_args(c)

    g = sub.add_parser("segment", help="segment images or a bag with a calibrated model")
    g.add_argument("--model", type=Path, required=True)
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path)
    src.add_argument("--bag", type=Path)
    g.add_argument("--topic", help="image topic of --bag")
    g.add_argument("--out", type=Path, required=True)
    _config_args(g)

    e = sub.add_parser("evaluate", help="Evaluations A and B on a test set, or a seed x K grid")
    e.add_argument("--model", type=Path, help="calibrated model (with --test)")
    e.add_argument("--test", type=Path, help="dataset root or its test folder (images/, "
                   "masks/ and/or labels.csv)")
    e.add_argument("--data", type=Path, help="dataset root: calibrate per seed and K")
    e.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4])
    e.add_argument("--cluster-grid", "--clusters-list", dest="cluster_grid", type=_ints,
                   help="K values for --data (default: --clusters or 20)")
    e.add_argument("--no-empty", action="store_true", help="ignore D/empty (border fallback)")
    e.add_argument("--json", type=Path, help="write the metrics here")
    e.add_argument("--icas", choices=("off", "replace", "combine"), default="off",
                   help="with --model: iCAS normal prompting as the anomaly vote, instead of "
                        "(replace) or together with (combine) the anomaly clusters")
    e.add_argument("--icas-normal", type=Path,
                   help="folder of normal shots (default: the dataset's reference/)")
    e.add_argument("--icas-shots", type=int, default=4,
                   help="normal shots k (0: no normal prompt; needs --icas-anomaly-image)")
    e.add_argument("--icas-anomaly-image", type=Path, help="anomaly prompt image")
    e.add_argument("--icas-anomaly-mask", type=Path,
                   help="its anomaly mask (nonzero = anomaly, same size)")
    e.add_argument("--icas-seed", type=int, default=0, help="which k shots (seeded draw)")
    e.add_argument("--icas-threshold", type=float, default=0.5, help="iCAS patch threshold")
    e.add_argument("--icas-checkpoint", type=Path, help="default: the shipped checkpoint")
    _config_args(e)

    b = sub.add_parser("bench",
                       help="benchmarks: fusion | frame | memory | backends | ros | icas")
    b.add_argument("what", choices=("fusion", "frame", "memory", "backends", "ros", "icas"))
    b.add_argument("--model", type=Path, help="ros: model dir (default demo_out/model)")
    b.add_argument("--images", type=int, default=1000, help="memory: baseline images")
    b.add_argument("--icas", choices=("off", "replace", "combine"), default="off",
                   help="frame: also run the iCAS vote (shipped checkpoint, 4 normal shots)")
    b.add_argument("--repeats", type=int, default=50)
    b.add_argument("--json", type=Path)

    from pasta_ros.export.cli import add_export_parser
    add_export_parser(sub)
    from pasta_ros.ros.clients import add_ros_commands  # rclpy is imported lazily
    add_ros_commands(sub)
    from pasta_ros.core.icas.cli import add_bench_icas_args, add_icas_commands
    add_bench_icas_args(b)  # --checkpoint, --seeds
    add_icas_commands(sub)  # pasta icas train | segment | evaluate | export
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from pasta_ros import commands
    from pasta_ros.core.backbones.base import BackboneError
    from pasta_ros.core.errors import PastaError
    from pasta_ros.data.bags import BagError
    from pasta_ros.data.images import ImageReadError
    user_errors = (ConfigError, PastaError, BackboneError, BagError, ImageReadError,
                   FileNotFoundError, FileExistsError)
    t0 = time.perf_counter()
    try:
        result = getattr(commands, f"cmd_{args.command}")(args)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=float))
    log.info("done in %.1f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
