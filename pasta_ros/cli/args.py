"""Argument types and the shared config options of the ``pasta`` sub-commands (a leaf module:
it imports nothing else of the CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pasta_ros.core.config import PastaConfig, field_specs, load_yaml_config


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


# fields with a hand-written option (or none) instead of the generated one
_SPECIAL = {"input_width", "input_height"}


def add_config_args(p: argparse.ArgumentParser) -> None:
    """One option per :class:`PastaConfig` field (``--ratio-threshold``; booleans as
    ``--flag/--no-flag``), generated from the schema, plus ``--input-size`` and ``--config``.
    Every option defaults to None: only what the user gives overrides the YAML / defaults."""
    g = p.add_argument_group("settings (the shared config schema; defaults in brackets)")
    for f in field_specs():
        if f.name in _SPECIAL:
            continue
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        text = f"{meta['description']} [{f.default}]"
        if f.name == "backbone":
            text += " (efficientnet_lite0 accepts a :s8+s16 style layer suffix)"
        if isinstance(f.default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            choices = meta.get("choices") if f.name != "backbone" else None
            g.add_argument(flag, type=type(f.default), choices=choices, default=None, help=text)
    g.add_argument("--input-size", type=parse_size,
                   help="max network input WxH (input_width x input_height) [910x512]")
    g.add_argument("--config", type=Path, help="YAML file (ros__parameters form or flat)")


def config_from_args(args: argparse.Namespace) -> tuple[PastaConfig, set[str]]:
    """The shared config from a YAML file (optional) plus explicit options; and which
    fields the user set explicitly."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_yaml_config(args.config))
    values.update({f.name: getattr(args, f.name) for f in field_specs()
                   if getattr(args, f.name, None) is not None})
    if getattr(args, "input_size", None):
        values["input_width"], values["input_height"] = args.input_size
    return PastaConfig.from_dict(values), set(values)
