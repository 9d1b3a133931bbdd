"""Calibrate from image folders or bags into a model directory: the one place that the CLI
(``pasta calibrate``) and the benchmarks run a calibration from paths (the extractor comes from
:func:`pasta_ros.pipeline.build_extractor`, as for inference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pasta_ros.core.backbones import weights_fingerprint
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.features import FeatureExtractor, ImageSource
from pasta_ros.core.methods import METHODS
from pasta_ros.core.model_io import CalibratedModel, save_model
from pasta_ros.core.report import overlay_clusters, plot_distributions, write_rgb
from pasta_ros.data.images import ReadStats
from pasta_ros.pipeline import (
    build_extractor,
    build_fused_graph,
    prepare_runtime,
    uses_fused_graph,
)
from pasta_ros.sources import open_source


def write_report(model: CalibratedModel, extractor: FeatureExtractor, source: ImageSource,
                 out: Path, n: int = 4) -> None:
    """Fig. 1 and cluster-map overlays of the first ``n`` baseline images under out/report
    (PASTA models; other methods have no anomaly clusters to show)."""
    if model.method != "pasta":
        return
    plot_distributions(model, out / "report" / "cluster_distributions.png")
    checks = model.stats.get("self_checks", [])  # one sentence per finding, with what to do
    (out / "report" / "self_checks.txt").write_text(
        "".join(f"{c['code']}: {c['message']}\n" for c in checks) or "all self-checks passed\n")
    centers = torch.from_numpy(model.centers).to(extractor.device)
    for i, (name, image) in enumerate(source()):
        if i >= n:
            break
        prepared = extractor.prepare(image)
        cmap = assign_clusters(extractor.features([prepared]), centers)[0].cpu().numpy()
        write_rgb(out / "report" / f"clusters_{name}.png",
                  overlay_clusters(prepared, cmap, model.anomaly))


def calibrate_paths(cfg: PastaConfig, baseline: Path, reference: Path, empty: Path | None,
                    out: Path, *, topic: str | None = None, quiet: bool = False) -> dict:
    """Calibrate on image folders or bags (``topic`` for bags), save the model to ``out`` with
    its report, and return a JSON-able summary (model id, anomaly/background clusters, stats)."""
    stats = ReadStats()
    limit = cfg.max_image_pixels
    base_src = open_source(baseline, topic, stats=stats, max_pixels=limit)
    ref_src = open_source(reference, topic, stats=stats, max_pixels=limit)
    empty_src = open_source(empty, topic, stats=stats, max_pixels=limit) if empty else None
    fingerprint = weights_fingerprint(cfg.backbone, cfg.weights)
    extractor = build_extractor(cfg, cache_dir=Path(out) / "engines",  # graphs beside the model
                                weights_hash=fingerprint)
    calibrate = METHODS[cfg.method].calibrate
    model = calibrate(extractor, base_src, ref_src, empty_src, cfg,
                      weights_hash=fingerprint, quiet=quiet)
    model.stats["skipped_images"] = stats.n_skipped
    save_model(model, out)
    prepare_runtime(extractor.backbone, model.input_size, model.stride)  # int8: built here
    if uses_fused_graph(cfg, model):  # the frame graph too: loading the model exports nothing
        torch_backbone = getattr(extractor.backbone, "source", extractor.backbone)
        cache = Path(cfg.engine_dir) if cfg.engine_dir else Path(out) / "engines"  # as load
        build_fused_graph(model, torch_backbone, cfg, cache)
    write_report(model, extractor, base_src, out)
    return {"model": str(out), "model_id": model.model_id,
            "anomaly_clusters": np.flatnonzero(model.anomaly).tolist(),
            "background_clusters": np.flatnonzero(model.background).tolist(),
            "background_source": model.background_source, **model.stats}
