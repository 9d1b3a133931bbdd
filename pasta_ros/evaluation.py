"""Evaluations A and B on a test set, and the paper-style seed x K grid."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from pasta_ros.core.calibration import calibrate
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.core.instance_metrics import (
    InstanceScores,
    gt_instances_from_classes,
    paint_instances,
)
from pasta_ros.core.metrics import ConfusionMatrix, binary_iou, image_auroc, mean_std
from pasta_ros.data.images import read_image
from pasta_ros.data.layout import (
    DatasetLayout,
    check_mask_size,
    read_instances,
    read_labels_csv,
    read_mask,
    test_items,
)
from pasta_ros.pipeline import PastaPipeline

if TYPE_CHECKING:
    from pasta_ros.core.icas.vote import IcasVote

log = logging.getLogger(__name__)
# ms_per_image is left out of the grid summary: after the first run the grid reuses cached
# backbone features, so its timings would not be whole-frame latencies.
METRICS = ("iou_background", "iou_target", "iou_anomaly", "miou", "patch_iou_anomaly",
           "auroc", "instance_precision_anomaly", "instance_recall_anomaly",
           "instance_f1_anomaly", "instance_precision_target", "instance_recall_target",
           "instance_f1_target", "pq_anomaly", "sq_anomaly", "rq_anomaly", "pq_target",
           "sq_target", "rq_target")


class CachingExtractor(FeatureExtractor):
    """A FeatureExtractor that remembers features by image content (float16, in RAM), so a
    seed x K grid runs the backbone once per image. For evaluation only."""

    def __init__(self, base: FeatureExtractor) -> None:
        super().__init__(base.backbone, base.max_size, base.device, base.color_weight)
        self._store: dict[bytes, torch.Tensor] = {}

    def features(self, prepared):
        keys = [hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in prepared]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            fresh = super().features([prepared[i] for i in missing])
            for i, f in zip(missing, fresh):
                self._store[keys[i]] = f.half()
        return torch.stack([self._store[k] for k in keys]).float()


def evaluate(pipeline: PastaPipeline, layout: DatasetLayout, *, quiet: bool = False,
             icas: IcasVote | None = None) -> dict:
    """Evaluation B (3-class IoU, mIoU), Evaluation A (patch anomaly IoU), instance metrics
    (:mod:`instance_metrics`; GT from ``test/instances`` or, without it, the connected
    components of each class mask), image AUROC when ``labels.csv`` exists, and mean
    milliseconds per image (whole pipeline). A test set with ``labels.csv`` and no masks gives
    the AUROC only. ``icas``: an iCAS vote used by every frame."""
    items = test_items(layout)
    with_masks = items[0][2] is not None
    cm, inst = ConfusionMatrix(), InstanceScores(min_area=pipeline_min_area(pipeline))
    inter = union = 0
    scores: dict[str, float] = {}
    times = []
    for stem, image_path, mask_path in tqdm(items, desc="evaluate", disable=quiet, leave=False):
        image = read_image(image_path)
        t0 = time.perf_counter()
        result = pipeline.process(image, with_instances=with_masks, icas=icas)
        times.append((time.perf_counter() - t0) * 1e3)
        scores[stem] = result.anomaly_score()
        if not with_masks:
            continue
        truth = read_mask(mask_path)
        check_mask_size(truth, image, mask_path, image_path)
        cm.add(truth, result.labels)
        i, u = binary_iou(truth == 2, result.anomaly_map())
        inter, union = inter + i, union + u
        inst.add(_gt_instances(layout, stem, truth), truth,
                 *paint_instances(truth.shape, result.instances))
    nan = float("nan")
    out = {"images": len(items), "ms_per_image": float(np.mean(times)) if times else 0.0,
           "auroc": nan}
    if with_masks:
        iou = cm.iou() * 100
        out |= {"iou_background": iou[0], "iou_target": iou[1], "iou_anomaly": iou[2],
                "miou": float(np.nanmean(iou)),
                "patch_iou_anomaly": 100.0 * inter / union if union else nan,
                "gt_instances": "test/instances" if layout.test_instances is not None
                else "connected components of test/masks", **inst.result()}
    else:
        out["note"] = (f"{layout.test_images.parent} has labels.csv but no masks/: image AUROC "
                       "only; the IoUs and instance metrics need test/masks/<stem>.png")
    if layout.labels_csv is not None:
        labels = read_labels_csv(layout.labels_csv)
        stems = [s for s in scores if s in labels]
        out["auroc"] = 100 * image_auroc([labels[s] for s in stems], [scores[s] for s in stems])
    return {k: (round(float(v), 3) if isinstance(v, float) else v) for k, v in out.items()}


def pipeline_min_area(pipeline: PastaPipeline) -> int:
    """The segmenter's smallest object in pixels (GT instances under it are ignored)."""
    seg = getattr(pipeline.segmenter, "inner", pipeline.segmenter)
    return int(getattr(seg, "min_area", 0))


def _gt_instances(layout: DatasetLayout, stem: str, truth: np.ndarray) -> np.ndarray:
    if layout.test_instances is not None and (layout.test_instances / f"{stem}.png").is_file():
        return read_instances(layout.test_instances / f"{stem}.png", truth.shape)
    return gt_instances_from_classes(truth)


def evaluate_grid(layout: DatasetLayout, cfg: PastaConfig, extractor: FeatureExtractor,
                  seeds: Iterable[int], clusters: Iterable[int], sources, *,
                  weights_hash: str = "", quiet: bool = False) -> dict:
    """Calibrate per (K, seed) and evaluate; returns per-run metrics and mean/std per K.

    ``sources`` = (baseline, reference, empty|None) image sources of ``layout``.
    """
    cached = extractor if isinstance(extractor, CachingExtractor) else CachingExtractor(extractor)
    runs, summary = [], {}
    for k in clusters:
        per_k = []
        for seed in seeds:
            run_cfg = cfg.replace(clusters=k, seed=seed)
            model = calibrate(cached, *sources, run_cfg, weights_hash=weights_hash, quiet=quiet)
            pipe = PastaPipeline.assemble(model, cached, run_cfg, run_cfg.vote_threshold)
            metrics = evaluate(pipe, layout, quiet=quiet)
            metrics.pop("ms_per_image")  # not a frame latency with cached features
            metrics.update(clusters=k, seed=seed, anomaly_clusters=int(model.anomaly.sum()))
            log.info("K=%d seed=%d: %s", k, seed, metrics)
            per_k.append(metrics)
            runs.append(metrics)
        summary[str(k)] = {m: dict(zip(("mean", "std"),
                                       map(_r, mean_std([r.get(m, float("nan")) for r in per_k]))))
                           for m in METRICS}
    return {"runs": runs, "summary": summary}


def _r(x: float) -> float:
    return round(x, 3)


def format_summary(summary: dict) -> str:
    """Paper-style table: one row per K, 'mean (std)' per metric."""
    cols = ("iou_background", "iou_target", "iou_anomaly", "miou", "patch_iou_anomaly", "auroc",
            "instance_precision_anomaly", "instance_recall_anomaly", "pq_anomaly", "pq_target")
    head = f"{'K':>4} " + " ".join(f"{c:>20}" for c in cols)
    lines = [head]
    for k, row in summary.items():
        cells = [f"{row[c]['mean']:.1f} ({row[c]['std']:.1f})" if c in row else "-"
                 for c in cols]
        lines.append(f"{k:>4} " + " ".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def save_json(path: str | Path, data: dict) -> None:
    import json
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=float))
