"""`pasta report`: every method over seeds and sweeps -> report.md, figures, report.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from pasta_ros.cli.args import add_config_args, config_from_args, parse_ints


def parse_names(text: str) -> list[str]:
    """'pasta,waw' -> ['pasta', 'waw']; an argparse type."""
    return [v.strip() for v in text.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``pasta`` sub-parsers."""
    r = sub.add_parser("report", help="run methods over seeds and sweeps on a dataset; write "
                                      "report.md with tables and figures")
    r.add_argument("--data", type=Path, required=True, help="dataset root (pasta synth layout)")
    r.add_argument("--out", type=Path, required=True, help="folder for report.md, PNGs, JSON")
    r.add_argument("--seeds", type=parse_ints, default=[0, 1, 2, 3, 4])
    r.add_argument("--methods", type=parse_names, default=["pasta", "waw"],
                   help="comma-separated METHODS names [pasta,waw]")
    r.add_argument("--clusters-list", type=parse_ints, default=[],
                   help="PASTA K sweep (the --clusters value is always run)")
    r.add_argument("--k-sphere-list", type=parse_ints, default=[],
                   help="WaW k_sphere sweep (the --waw-k-sphere value is always run)")
    r.add_argument("--k-v-list", type=parse_ints, default=[],
                   help="WaW k_v sweep (the --waw-k-v value is always run)")
    r.add_argument("--no-empty", action="store_true", help="ignore D/empty")
    add_config_args(r)
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> dict:
    from pasta_ros.core.backbones import weights_fingerprint
    from pasta_ros.data.layout import DatasetLayout
    from pasta_ros.evaluation_report import ReportPlan, run_report, write_report
    from pasta_ros.pipeline import build_extractor
    from pasta_ros.sources import folder_source

    cfg, _ = config_from_args(args)
    layout = DatasetLayout.discover(args.data)
    empty = None if args.no_empty or layout.empty is None else folder_source(layout.empty)
    sources = (folder_source(layout.baseline), folder_source(layout.reference), empty)
    plan = ReportPlan(tuple(args.methods), tuple(args.seeds), tuple(args.clusters_list),
                      tuple(args.k_sphere_list), tuple(args.k_v_list))
    runs = run_report(layout, cfg, build_extractor(cfg), plan, sources,
                      weights_hash=weights_fingerprint(cfg.backbone, cfg.weights),
                      quiet=args.quiet)
    data = write_report(runs, plan, cfg, layout, args.out)
    return {"report": str(args.out / "report.md"), "runs": len(data["runs"]),
            "figures": data["figures"]}
