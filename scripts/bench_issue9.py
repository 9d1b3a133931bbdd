"""Issue 9 benchmark: one dataset, seeds x (with / without D/empty) x segmenter variants.

The backbone runs once per image (cached); each (seed, empty setting) is calibrated once and
evaluated with every variant (the variants change only the segmenter, not calibration).
Usage: python scripts/bench_issue9.py --data D [--seeds 0,1,2,3,4] [--variants split,nosplit]
       [--settings empty,noempty] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pasta_ros.pipeline import build_extractor as make_extractor
from pasta_ros.core.config import PastaConfig

from pasta_ros.core.calibration import calibrate
from pasta_ros.core.metrics import mean_std
from pasta_ros.core.segmenters import build_segmenter
from pasta_ros.data.layout import DatasetLayout
from pasta_ros.evaluation import METRICS, CachingExtractor, evaluate
from pasta_ros.pipeline import PastaPipeline
from pasta_ros.sources import folder_source

VARIANTS = {"split": {"instance_split": True}, "nosplit": {"instance_split": False},
            "sep1": {"instance_split": True, "split_separation": 1.0},
            "sep4": {"instance_split": True, "split_separation": 4.0}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--variants", default="split,nosplit")
    ap.add_argument("--settings", default="empty,noempty")
    ap.add_argument("--set", action="append", default=[], help="extra config k=v (float)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    extra = {k: type(getattr(PastaConfig(), k))(v) for k, v in (s.split("=") for s in a.set)}
    cfg = PastaConfig().replace(**extra)
    layout = DatasetLayout.discover(a.data)
    ext = CachingExtractor(make_extractor(cfg))
    runs = []
    t0 = time.time()
    for setting in a.settings.split(","):
        empty = folder_source(layout.empty) if setting == "empty" else None
        for seed in map(int, a.seeds.split(",")):
            run_cfg = cfg.replace(seed=seed)
            model = calibrate(ext, folder_source(layout.baseline),
                              folder_source(layout.reference), empty, run_cfg, quiet=True)
            for v in a.variants.split(","):
                vcfg = run_cfg.replace(**VARIANTS[v])
                pipe = PastaPipeline(model, ext, build_segmenter("clusters", model, vcfg),
                                     model.vote_threshold)
                m = evaluate(pipe, layout, quiet=True)
                m.pop("ms_per_image")
                m.update(setting=setting, seed=seed, variant=v,
                         anomaly_clusters=int(model.anomaly.sum()))
                runs.append(m)
                print(json.dumps({k: m[k] for k in ("setting", "seed", "variant", "iou_target",
                                                    "iou_anomaly", "patch_iou_anomaly",
                                                    "instance_precision_anomaly",
                                                    "instance_recall_anomaly", "pq_anomaly",
                                                    "pq_target", "anomaly_clusters")}),
                      file=sys.stderr, flush=True)
    summary = {}
    for setting in a.settings.split(","):
        for v in a.variants.split(","):
            sel = [r for r in runs if r["setting"] == setting and r["variant"] == v]
            summary[f"{setting}/{v}"] = {m: [round(x, 1) for x in mean_std([r[m] for r in sel])]
                                         for m in METRICS}
    out = {"data": str(a.data), "seeds": a.seeds, "config": cfg.to_dict(), "runs": runs,
           "summary": summary, "wall_s": round(time.time() - t0, 1)}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1, default=float))
    for key, row in summary.items():
        print(key, " ".join(f"{m}={row[m][0]}({row[m][1]})" for m in
                            ("iou_target", "iou_anomaly", "patch_iou_anomaly",
                             "instance_precision_anomaly", "instance_recall_anomaly",
                             "instance_recall_target", "pq_anomaly", "pq_target")))


if __name__ == "__main__":
    main()
