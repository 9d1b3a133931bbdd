"""Argument types and the shared config options of the ``pasta`` sub-commands (a leaf module:
it imports nothing else of the CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pasta_ros.core.config import BACKBONE_CHOICES, PastaConfig, load_yaml_config


def parse_size(text: str) -> tuple[int, int]:
    """'910x512' -> (910, 512); an argparse type."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 910x512, got {text!r}") from None
    return w, h


def parse_ints(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; an argparse type."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def parse_points(text: str) -> list[tuple[float, ...]]:
    """'x,y;x,y' (or boxes 'x0,y0,x1,y1;...') -> list of float tuples; an argparse type."""
    try:
        return [tuple(float(v) for v in part.split(",")) for part in text.split(";") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'x,y;x,y' numbers, got {text!r}") from None


# option name -> PastaConfig field, for the options add_config_args declares
_CONFIG_OPTIONS = ("backbone", "weights", "clusters", "seed", "ratio_threshold", "vote_threshold",
                   "device", "batch_size", "min_area", "backend", "fused_graph", "precision",
                   "engine_dir", "engine_rebuild", "segmenter", "sam3_weights", "sam3_prompt",
                   "sam3_score_threshold")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The PastaConfig options shared by calibrate, segment and evaluate."""
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


def config_from_args(args: argparse.Namespace) -> tuple[PastaConfig, set[str]]:
    """The shared config from a YAML file (optional) plus explicit options; and which
    fields the user set explicitly."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_yaml_config(args.config))
    values.update({n: getattr(args, n) for n in _CONFIG_OPTIONS
                   if getattr(args, n, None) is not None})
    if getattr(args, "input_size", None):
        values["input_width"], values["input_height"] = args.input_size
    return PastaConfig.from_dict(values), set(values)
