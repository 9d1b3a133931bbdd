"""`pasta report` output: ``report.md`` (PASTA Table II/III-style tables, Evaluation A,
instance metrics, sweeps), the figures beside it (Fig. 1, Fig. 6, Fig. 7) and ``report.json``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.report import plot_distributions
from pasta_ros.core.report_figures import plot_heatmap, plot_ksphere
from pasta_ros.data.layout import DatasetLayout

if TYPE_CHECKING:  # annotations only: evaluation_report imports this module
    from pasta_ros.evaluation_report import ReportPlan, ReportRun

TABLE2 = (("iou_background", "IoU B"), ("iou_target", "IoU T"), ("iou_anomaly", "IoU A"),
          ("miou", "mIoU"))
EVAL_A = (("patch_iou_anomaly", "patch anomaly IoU (Eval. A)"), ("auroc", "image AUROC"))
INSTANCE = (("instance_f1_target", "F1 target"), ("instance_f1_anomaly", "F1 anomaly"),
            ("pq_target", "PQ target"), ("pq_anomaly", "PQ anomaly"))


def _cell(row: dict, metric: str) -> str:
    v = row.get(metric)
    if not isinstance(v, dict) or not np.isfinite(v["mean"]):
        return "-"
    return f"{v['mean']:.1f} ± {v['std']:.1f}"


def _setting(row: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in row["setting"].items()) or "-"


def _table(rows: list[dict], cols: tuple[tuple[str, str], ...], first: str = "method") -> str:
    head = f"| {first} | setting | seeds | " + " | ".join(c for _, c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for r in rows:
        seeds = f"{r['n_seeds']}" + (" (seed-free)" if r["seed_free"] else "")
        lines.append(f"| {r['method']} | {_setting(r)} | {seeds} | "
                     + " | ".join(_cell(r, m) for m, _ in cols) + " |")
    return "\n".join(lines)


def _defaults(summary: list[dict]) -> list[dict]:
    """The first (default) setting of each method."""
    seen, out = set(), []
    for r in summary:
        if r["method"] not in seen:
            seen.add(r["method"])
            out.append(r)
    return out


def _cost_table(rows: list[dict], cfg: PastaConfig) -> str:
    lines = ["| method | object masks | features extracted | K | k_sphere | k_v | "
             "calibration [s] |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["setting"]
        masks = {"pasta": "patch grid (no masks)",
                 "pasta_object": f"patch grid + {cfg.segmenter} instances",
                 "waw": f"{cfg.waw_masks}" + (f" ({cfg.segmenter})"
                                              if cfg.waw_masks == "segmenter" else "")
                 }.get(r["method"], "-")
        cold = "" if r["calibration_cold"] else " (warm cache)"
        lines.append(f"| {r['method']} | {masks} | {r['features']} | {s.get('clusters', '-')} "
                     f"| {s.get('waw_k_sphere', '-')} | {s.get('waw_k_v', '-')} | "
                     f"{r['calibration_s']:.1f}{cold} |")
    return "\n".join(lines)


def _waw_grid(summary: list[dict], plan: ReportPlan, cfg: PastaConfig, metric: str,
              stat: str = "mean") -> tuple[list[int], list[int], np.ndarray]:
    ks = sorted({r["setting"]["waw_k_sphere"] for r in summary if r["method"] == "waw"})
    kv = sorted({r["setting"]["waw_k_v"] for r in summary if r["method"] == "waw"})
    grid = np.full((len(ks), len(kv)), np.nan)
    for r in summary:
        if r["method"] == "waw":
            s = r["setting"]
            grid[ks.index(s["waw_k_sphere"]), kv.index(s["waw_k_v"])] = r[metric][stat]
    return ks, kv, grid


def _figures(runs: list[ReportRun], summary: list[dict], plan: ReportPlan, cfg: PastaConfig,
             out: Path) -> list[str]:
    names = []
    for r in runs:
        if r.method == "pasta" and r.model is not None:
            plot_distributions(r.model, out / "fig1_pasta_distributions.png")
            names.append("fig1_pasta_distributions.png")
            break
    if any(r["method"] == "waw" for r in summary):
        ks, kv, _ = _waw_grid(summary, plan, cfg, "iou_anomaly")
        j = kv.index(cfg.waw_k_v) if cfg.waw_k_v in kv else 0
        curves = {}
        for metric, label in (("iou_target", "target IoU"), ("iou_anomaly", "anomaly IoU")):
            _, _, mean = _waw_grid(summary, plan, cfg, metric)
            _, _, std = _waw_grid(summary, plan, cfg, metric, "std")
            curves[label] = (mean[:, j], np.nan_to_num(std[:, j]))
        plot_ksphere(ks, curves, out / "fig6_iou_vs_ksphere.png",
                     f"WaW, k_v = {kv[j]}: IoU vs k_sphere (band: ± std over seeds)")
        _, _, heat = _waw_grid(summary, plan, cfg, "iou_anomaly")
        plot_heatmap(ks, kv, heat, out / "fig7_anomaly_iou_heatmap.png",
                     "WaW anomaly IoU [%]: k_sphere x k_v")
        names += ["fig6_iou_vs_ksphere.png", "fig7_anomaly_iou_heatmap.png"]
    return names


def markdown(summary: list[dict], plan: ReportPlan, cfg: PastaConfig, layout: DatasetLayout,
             figures: list[str]) -> str:
    """The text of ``report.md``."""
    defaults = _defaults(summary)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    parts = [
        f"# pasta report: {layout.root}", "",
        f"Written {when}. Methods {', '.join(plan.methods)}; seeds "
        f"{', '.join(map(str, plan.seeds))}; backbone `{cfg.backbone}`, input "
        f"{cfg.input_width}x{cfg.input_height}, segmenter `{cfg.segmenter}`. IoU in %, "
        "mean ± std over the seeds. A seed-free method (WaW with ExG masks has no random "
        "step) is run once per setting; its std is 0 by construction.", "",
        "## Evaluation B: 3-class IoU at each method's default setting (Table II style)", "",
        _table(defaults, TABLE2), "",
        "## Cost (Table III style)", "",
        "Features extracted: PASTA's patch rows (baseline + reference), WaW's object "
        "embeddings (baseline + reference). Calibration time of each method's first (cold) "
        "run, backbone included, on this machine.", "",
        _cost_table(defaults, cfg), "",
        "## Evaluation A and image AUROC", "", _table(defaults, EVAL_A), "",
        "## Instance metrics (matched instances, IoU > 0.5)", "", _table(defaults, INSTANCE),
        "", "## All settings (sweeps)", "", _table(summary, TABLE2 + EVAL_A[:1]), ""]
    if figures:
        parts += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    parts += ["Raw runs and summary: `report.json`.", ""]
    return "\n".join(parts)


def write_all(runs: list[ReportRun], summary: list[dict], plan: ReportPlan, cfg: PastaConfig,
              layout: DatasetLayout, out: Path) -> dict:
    """Write report.md, report.json and the PNGs into ``out``; returns the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(runs, summary, plan, cfg, out)
    (out / "report.md").write_text(markdown(summary, plan, cfg, layout, figures))
    data = {"dataset": str(layout.root), "methods": list(plan.methods),
            "seeds": list(plan.seeds), "config": cfg.to_dict(), "summary": summary,
            "runs": [r.to_json() for r in runs], "figures": figures}
    (out / "report.json").write_text(json.dumps(data, indent=1, default=float))
    return data
