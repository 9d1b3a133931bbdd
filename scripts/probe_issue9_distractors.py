"""Issue 9: what an empty-scene instance bank would remove, and the distractor ceiling.

Per seed: one calibration with ``D/empty`` (shipped defaults), then on the test frames three
variants of the pipeline's instances, each scored with Evaluation B and the instance metrics:

- ``as_is``: the pipeline's output;
- ``bank``: instances that look like what the empty scenes show are removed (background).
  The bank: every instance the segmenter finds in an empty scene (there is no target or
  anomaly there, so each is a distractor), described by the mean of its L2-normalised patch
  features (``--quantised``: of the centres of its patches' clusters, what the fused graph
  could give). Descriptors and threshold are the package's (:mod:`pasta_ros.core.
  distractor_bank`, what ``distractor_bank`` ships): the 10th percentile, over the bank, of
  each entry's most similar entry from another empty image (cosine). A test instance is
  removed when its most similar bank entry reaches it;
- ``oracle``: instances lying mostly (> 50 %) on ground-truth background removed using the
  ground truth (a ceiling, no method).

Not in the package: a measurement for the design of a distractor step (BENCHMARKS.md).
Usage: python scripts/probe_issue9_distractors.py D --seeds 0,1,2 [--quantised]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pasta_ros.core.calibration import calibrate
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.distractor_bank import distractor_ids, fit_bank, instance_descriptors
from pasta_ros.core.instance_metrics import InstanceScores, paint_instances
from pasta_ros.core.metrics import ConfusionMatrix
from pasta_ros.core.segmenters import build_segmenter
from pasta_ros.data.images import read_image
from pasta_ros.data.layout import DatasetLayout
from pasta_ros.evaluation import (
    CachingExtractor,
    _gt_instances,
    pipeline_min_area,
    read_mask,
    test_items,
)
from pasta_ros.pipeline import PastaPipeline, build_extractor
from pasta_ros.sources import folder_source

KEYS = ("iou_target", "iou_anomaly", "instance_precision_target", "instance_precision_anomaly",
        "instance_recall_target", "instance_recall_anomaly", "pq_target", "pq_anomaly")


def patch_features(pipe: PastaPipeline, ext, prepared: np.ndarray, quantised: bool,
                   ) -> tuple[np.ndarray, torch.Tensor]:
    """``(C, h, w) float32`` unit patch features (or their clusters' centres) and the map."""
    feats = ext.features([prepared])
    cmap = assign_clusters(feats, pipe.centers)[0]
    if quantised:
        return pipe.centers.numpy()[cmap.numpy()].transpose(2, 0, 1), cmap
    return torch.nn.functional.normalize(feats[0], dim=0).numpy(), cmap


def build_bank(pipe, ext, empty_dir: Path, quantised: bool) -> tuple[np.ndarray, float]:
    """``(N, C)`` bank of empty-scene instance descriptors and its threshold (an empty bank
    that reaches nothing when fewer than two empty images show an instance)."""
    per_image = []
    for _, img in folder_source(empty_dir)():
        prepared = ext.prepare(img)
        feats, cmap = patch_features(pipe, ext, prepared, quantised)
        per_image.append(instance_descriptors(pipe.segmenter.segment(prepared, cmap), feats)[1])
    fitted = fit_bank(per_image)
    return fitted if fitted is not None else (np.zeros((0, pipe.centers.shape[1])), np.inf)


def run_seed(layout: DatasetLayout, ext, seed: int, quantised: bool) -> dict[str, dict]:
    cfg = PastaConfig().replace(seed=seed)
    model = calibrate(ext, folder_source(layout.baseline), folder_source(layout.reference),
                      folder_source(layout.empty), cfg, quiet=True)
    pipe = PastaPipeline(model, ext, build_segmenter("clusters", model, cfg),
                         model.vote_threshold)
    bank, tau = build_bank(pipe, ext, layout.empty, quantised)
    names = ("as_is", "bank", "oracle")
    cms = {k: ConfusionMatrix() for k in names}
    ins = {k: InstanceScores(min_area=pipeline_min_area(pipe)) for k in names}
    removed = {"background": 0, "object": 0, "background_total": 0}
    for stem, image_path, mask_path in test_items(layout):
        img, truth = read_image(image_path), read_mask(mask_path)
        gt = _gt_instances(layout, stem, truth)
        res = pipe.process(img)
        pid, pcls = paint_instances(truth.shape, res.instances)
        n = pcls.size
        on_bg = (np.bincount(pid.ravel(), weights=truth.ravel() == 0, minlength=n)
                 / np.maximum(np.bincount(pid.ravel(), minlength=n), 1)) > 0.5
        on_bg[0] = False
        feats, _ = patch_features(pipe, ext, ext.prepare(img), quantised)
        by_bank = np.zeros(n, bool)
        by_bank[distractor_ids(pid, feats, bank, tau)] = True
        removed["background"] += int((by_bank & on_bg).sum())
        removed["object"] += int((by_bank & ~on_bg)[1:].sum())
        removed["background_total"] += int(on_bg.sum())
        for k, drop in (("as_is", np.zeros(n, bool)), ("bank", by_bank), ("oracle", on_bg)):
            labels = np.where(drop[pid], 0, res.labels).astype(np.uint8)
            cls = np.where(drop, 0, pcls).astype(np.uint8)
            cms[k].add(truth, labels)
            ins[k].add(gt, truth, np.where(drop[pid], 0, pid), cls)
    print(f"seed {seed}: bank {len(bank)} instances, threshold {tau:.3f}, removed {removed}",
          flush=True)
    out = {}
    for k in names:
        iou = cms[k].iou() * 100
        out[k] = {"iou_target": iou[1], "iou_anomaly": iou[2], **ins[k].result()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--quantised", action="store_true")
    a = ap.parse_args()
    layout = DatasetLayout.discover(a.data)
    ext = CachingExtractor(build_extractor(PastaConfig()))
    runs = [run_seed(layout, ext, int(s), a.quantised) for s in a.seeds.split(",")]
    print("| variant | " + " | ".join(KEYS) + " |")
    for k in runs[0]:
        print(f"| {k} | " + " | ".join(f"{np.mean([r[k][m] for r in runs]):.1f}"
                                      for m in KEYS) + " |")


if __name__ == "__main__":
    main()
