"""Issue 9 segmenter cost, same run: the weight-free segmenter with the instance split off,
on with the split of main 45e28ca (full-frame prior; --old FILE), on with this tree's split
(patch-grid candidates, prior on boxes), and with ``seed_depth``. Variants alternate on each
frame so all see the same load; also checks that the old and new split give the same ids.
Usage: python scripts/time_issue9.py --data D [--rounds 5] [--seed-depth 0.5] --old FILE
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

from pasta_ros.core.calibration import calibrate
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.instance_split import split_by_material
from pasta_ros.core.segmenters.clusters import ClusterSegmenter
from pasta_ros.data.layout import DatasetLayout
from pasta_ros.evaluation import CachingExtractor
from pasta_ros.pipeline import build_extractor
from pasta_ros.sources import folder_source


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed-depth", type=float, default=0.5)
    ap.add_argument("--old", type=Path, required=True, help="instance_split.py of main")
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("old_split", a.old)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    cfg = PastaConfig()
    layout = DatasetLayout.discover(a.data)
    ext = CachingExtractor(build_extractor(cfg))
    model = calibrate(ext, folder_source(layout.baseline), folder_source(layout.reference),
                      folder_source(layout.empty), cfg, quiet=True)
    centers = __import__("torch").from_numpy(model.centers).to(ext.device)
    frames = []
    for _, img in folder_source(layout.test_images)():
        prepared = ext.prepare(img)
        cmap = assign_clusters(ext.features([prepared]), centers)[0]
        frames.append((prepared, cmap))
    seg = ClusterSegmenter(model.background, model.color_log_odds, min_area=cfg.min_area)
    seg_d = ClusterSegmenter(model.background, model.color_log_odds, min_area=cfg.min_area,
                             seed_depth=a.seed_depth)
    anom, bg = model.anomaly, model.background

    def split(fn, img, cmap, ids):
        patches = anom[cmap.cpu().numpy()]
        return fn(ids, img, patches, ~bg[cmap.cpu().numpy()], min_area=cfg.min_area,
                  min_separation=cfg.split_separation)

    variants = {
        "split off": lambda img, cmap: seg.segment(img, cmap),
        "split on, main 45e28ca": lambda img, cmap: split(old.split_by_material, img, cmap,
                                                          seg.segment(img, cmap)),
        "split on, this branch": lambda img, cmap: split(split_by_material, img, cmap,
                                                         seg.segment(img, cmap)),
        f"split on, seed_depth {a.seed_depth}": lambda img, cmap: split(
            split_by_material, img, cmap, seg_d.segment(img, cmap)),
    }
    times = {k: [] for k in variants}
    same = 0
    for _ in range(a.rounds):
        for img, cmap in frames:
            outs = {}
            for name, fn in variants.items():
                t0 = time.perf_counter()
                outs[name] = fn(img, cmap)
                times[name].append((time.perf_counter() - t0) * 1e3)
            same += int(np.array_equal(outs["split on, main 45e28ca"],
                                       outs["split on, this branch"]))
    print(f"frames {len(frames)} x rounds {a.rounds}; old == new split ids on {same} of "
          f"{len(frames) * a.rounds}; size {frames[0][0].shape[1]}x{frames[0][0].shape[0]}")
    base = np.median(times["split off"])
    print("| segmenter | median | mean | p90 | median / split off |\n|---|---|---|---|---|")
    for name, ts in times.items():
        print(f"| `clusters`, {name} | {np.median(ts):.1f} ms | {np.mean(ts):.1f} ms | "
              f"{np.percentile(ts, 90):.1f} ms | {np.median(ts) / base:.2f} |")


if __name__ == "__main__":
    main()
