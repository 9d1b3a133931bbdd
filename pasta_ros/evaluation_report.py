"""`pasta report`: every method over seeds and parameter sweeps on one dataset.

Each run calibrates one method (``METHODS[name].calibrate``) with one seed and one setting,
and evaluates it with :func:`pasta_ros.evaluation.evaluate` (Evaluations A and B, instance
metrics). Each method has its own :class:`~pasta_ros.evaluation.CachingExtractor`, so the
backbone runs once per image (and object crop) per method; the first run of a method is
therefore the cold one, and its calibration time (backbone included) is the one reported as
the method's cost. Runs of a method with no random step (WaW with ExG masks) are done once per
setting and stand for every seed (their std is 0 by construction; the report says so).
The markdown, figures and JSON are written by :mod:`pasta_ros.evaluation_report_md`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import PastaError
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.core.methods import METHODS
from pasta_ros.core.metrics import mean_std
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.data.layout import DatasetLayout
from pasta_ros.evaluation import METRICS, CachingExtractor, evaluate
from pasta_ros.pipeline import PastaPipeline

# what a run's setting is, per method: the config fields the sweeps vary
SWEPT = {"pasta": ("clusters",), "pasta_object": ("clusters",),
         "waw": ("waw_k_sphere", "waw_k_v")}
COST = ("calibration_s", "features")


@dataclass(frozen=True)
class ReportPlan:
    """What to run: methods, seeds and the sweep values (PASTA K; WaW k_sphere x k_v).
    The config's own values are the methods' default settings (added to the sweeps)."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    clusters: tuple[int, ...] = ()
    k_spheres: tuple[int, ...] = ()
    k_vs: tuple[int, ...] = ()

    def settings(self, method: str, cfg: PastaConfig) -> list[dict]:
        """The settings of ``method``: ``[{field: value}]``, the default one first."""
        if method in ("pasta", "pasta_object"):
            return [{"clusters": k} for k in _with(cfg.clusters, self.clusters)]
        if method == "waw":
            ks, kv = _with(cfg.waw_k_sphere, self.k_spheres), _with(cfg.waw_k_v, self.k_vs)
            pairs = [(cfg.waw_k_sphere, cfg.waw_k_v)]
            pairs += [(a, b) for a in ks for b in kv if (a, b) != pairs[0]]
            return [{"waw_k_sphere": a, "waw_k_v": b} for a, b in pairs]
        return [{}]


def _with(default: int, values: tuple[int, ...]) -> list[int]:
    return [default, *[v for v in dict.fromkeys(values) if v != default]]


@dataclass
class ReportRun:
    """One (method, setting, seed) run: its metrics, cost and (first run only) the model."""

    method: str
    setting: dict
    seed: int
    metrics: dict
    calibration_s: float
    features: int
    cold: bool
    seed_free: bool = False  # one run that stands for every seed (no random step)
    model: CalibratedModel | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {"method": self.method, **self.setting, "seed": self.seed, **self.metrics,
                "calibration_s": round(self.calibration_s, 2), "features": self.features,
                "cold": self.cold, "seed_free": self.seed_free}


def feature_count(model: CalibratedModel) -> int:
    """Features a calibration extracted: WaW object embeddings, or PASTA patch rows."""
    s = model.stats
    if "extracted_features" in s:
        return int(s["extracted_features"])
    return int(s.get("baseline_patches", 0)) + int(s.get("reference_patches", 0))


def seeded(method: str, cfg: PastaConfig) -> bool:
    """Whether the method's result depends on the seed (K-Means somewhere)."""
    return not (method == "waw" and cfg.waw_masks == "exg")


def run_one(extractor: FeatureExtractor, layout: DatasetLayout, sources, cfg: PastaConfig,
            weights_hash: str) -> tuple[dict, float, CalibratedModel]:
    """Calibrate ``cfg.method`` and evaluate it: (metrics, calibration seconds, model)."""
    t0 = time.perf_counter()
    model = METHODS[cfg.method].calibrate(extractor, *sources, cfg, weights_hash=weights_hash,
                                          quiet=True)
    seconds = time.perf_counter() - t0
    pipe = PastaPipeline.assemble(model, extractor, cfg, cfg.vote_threshold)
    metrics = evaluate(pipe, layout, quiet=True)
    metrics.pop("ms_per_image")  # not a frame latency with cached features
    return metrics, seconds, model


def run_report(layout: DatasetLayout, cfg: PastaConfig, extractor: FeatureExtractor,
               plan: ReportPlan, sources, *, weights_hash: str = "",
               quiet: bool = False) -> list[ReportRun]:
    """Every run of ``plan`` (a tqdm bar over them unless ``quiet``); ``sources`` =
    (baseline, reference, empty|None) image sources of ``layout``."""
    unknown = [m for m in plan.methods if m not in METHODS]
    if unknown:
        raise PastaError(f"unknown method(s) {', '.join(unknown)}; available: "
                         f"{', '.join(METHODS)}")
    todo = [(m, s, seed) for m in plan.methods for s in plan.settings(m, cfg)
            for seed in (plan.seeds if seeded(m, cfg) else plan.seeds[:1])]
    caches = {m: CachingExtractor(extractor) for m in plan.methods}
    runs: list[ReportRun] = []
    for method, setting, seed in tqdm(todo, desc="report runs", unit="run", disable=quiet):
        run_cfg = cfg.replace(method=method, seed=seed, **setting)
        cold = not any(r.method == method for r in runs)
        metrics, seconds, model = run_one(caches[method], layout, sources, run_cfg,
                                          weights_hash)
        seeds = plan.seeds if not seeded(method, cfg) else (seed,)
        for s in seeds:  # a seed-free method's one run stands for every seed
            runs.append(ReportRun(method, setting, s, metrics, seconds, feature_count(model),
                                  cold and s == seeds[0], not seeded(method, cfg),
                                  model if cold and s == seeds[0] else None))
    return runs


def summarize(runs: list[ReportRun]) -> list[dict]:
    """Mean and std over seeds per (method, setting): ``[{method, setting, n_seeds,
    metric: {mean, std}}]`` in run order; cost = the cold run's (else the mean)."""
    groups: dict[tuple, list[ReportRun]] = {}
    for r in runs:
        groups.setdefault((r.method, tuple(sorted(r.setting.items()))), []).append(r)
    out = []
    for (method, setting), rs in groups.items():
        row = {"method": method, "setting": dict(setting), "n_seeds": len(rs),
               "seed_free": rs[0].seed_free}
        for m in METRICS:
            mean, std = mean_std([r.metrics.get(m, float("nan")) for r in rs])
            row[m] = {"mean": round(mean, 3), "std": round(std, 3)}
        cold = [r for r in rs if r.cold]
        row["calibration_s"] = round(cold[0].calibration_s if cold else
                                     float(np.mean([r.calibration_s for r in rs])), 2)
        row["calibration_cold"] = bool(cold)
        row["features"] = rs[0].features
        out.append(row)
    return out


def write_report(runs: list[ReportRun], plan: ReportPlan, cfg: PastaConfig,
                 layout: DatasetLayout, out: Path) -> dict:
    """Write ``out/report.md``, ``out/report.json`` and the figures; returns the JSON."""
    from pasta_ros.evaluation_report_md import write_all

    return write_all(runs, summarize(runs), plan, cfg, layout, out)
