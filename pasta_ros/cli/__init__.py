"""`pasta`: label-free anomaly and target segmentation for robotic sorting (PASTA, iCAS).

Commands: synth, calibrate, segment, evaluate, report, bench, export, config, models, icas, and
the ROS clients recalibrate, prompts, echo, play.

Each module of :data:`COMMANDS` adds its sub-command(s) with ``register(subparsers)`` and sets
``func`` on each sub-parser (``set_defaults(func=...)``); :func:`main` calls ``args.func``.
A new command is a new module here plus one entry in :data:`COMMANDS`.

A user's mistake (bad path, corrupt model, wrong option) prints one ``error:`` line and
exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from pasta_ros.cli import bench, config, export, icas, models, pasta, report, ros
from pasta_ros.core.errors import USER_ERRORS

log = logging.getLogger("pasta")

# in the order `pasta --help` lists them
COMMANDS = (pasta, report, bench, export, config, models, ros, icas)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pasta", description=__doc__.splitlines()[0])
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        result = args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=float))
    log.info("done in %.1f s", time.perf_counter() - t0)
    return 0
