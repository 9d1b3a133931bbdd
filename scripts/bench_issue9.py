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
from itertools import product
from pathlib import Path

from pasta_ros.core.calibration import calibrate
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.metrics import mean_std
from pasta_ros.core.segmenters import build_segmenter
from pasta_ros.data.layout import DatasetLayout
from pasta_ros.evaluation import METRICS, CachingExtractor, evaluate
from pasta_ros.pipeline import PastaPipeline
from pasta_ros.pipeline import build_extractor as make_extractor
from pasta_ros.sources import folder_source

VARIANTS = {"split": {"instance_split": True}, "nosplit": {"instance_split": False},
            "sep1": {"instance_split": True, "split_separation": 1.0},
            "sep4": {"instance_split": True, "split_separation": 4.0},
            **{f"sd{int(d * 10)}": {"instance_split": True, "seed_depth": d}
               for d in (0.3, 0.4, 0.5, 0.6)},
            **{f"ed{h}": {"instance_split": True, "split_edges": float(h),
                          "split_edges_colour": False} for h in (180, 240)},
            "edcolour": {"instance_split": True, "split_edges": 240.0,
                         "split_edges_colour": True},
            "distance": {"instance_split": True, "split_edges": 0.0},
            **{f"rim{r}": {"instance_split": True, "rim_prior": float(r)} for r in (0, 1, 2)},
            "necks": {"instance_split": True, "split_necks": True}}
BANK_STATS = ("distractor_bank", "distractor_bank_found", "distractor_threshold")


def _fields(pairs: list[str]) -> dict:
    """'k=v' strings -> config values typed as the PastaConfig field (bools: 0/1)."""
    out = {}
    for k, v in (p.split("=") for p in pairs):
        kind = type(getattr(PastaConfig(), k))
        out[k] = bool(int(v)) if kind is bool else kind(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--variants", default="split,nosplit")
    ap.add_argument("--settings", default="empty,noempty")
    ap.add_argument("--set", action="append", default=[], help="extra config k=v (float)")
    ap.add_argument("--calib", default="default:",
                    help="calibration variants 'name:k=v;k=v,name2:...' (each calibrated)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    cfg = PastaConfig().replace(**_fields(a.set))
    calibs = {c.split(":", 1)[0]: _fields([kv for kv in c.split(":", 1)[1].split(";") if kv])
              for c in a.calib.split(",")}
    layout = DatasetLayout.discover(a.data)
    ext = CachingExtractor(make_extractor(cfg))
    runs = []
    t0 = time.time()
    for setting in a.settings.split(","):
        empty = folder_source(layout.empty) if setting == "empty" else None
        for seed, (cname, cset) in product(map(int, a.seeds.split(",")), calibs.items()):
            run_cfg = cfg.replace(seed=seed, **cset)
            model = calibrate(ext, folder_source(layout.baseline),
                              folder_source(layout.reference), empty, run_cfg, quiet=True)
            for seg_v in a.variants.split(","):
                v = seg_v if len(calibs) == 1 else f"{cname}/{seg_v}"
                vcfg = run_cfg.replace(**VARIANTS[seg_v])
                pipe = PastaPipeline(model, ext, build_segmenter("clusters", model, vcfg),
                                     model.vote_threshold)
                m = evaluate(pipe, layout, quiet=True)
                m.pop("ms_per_image")
                m.update(setting=setting, seed=seed, variant=v,
                         anomaly_clusters=int(model.anomaly.sum()),
                         **{k: model.stats[k] for k in BANK_STATS if k in model.stats})
                runs.append(m)
                print(json.dumps({k: m[k] for k in ("setting", "seed", "variant", "iou_target",
                                                    "iou_anomaly", "patch_iou_anomaly",
                                                    "instance_precision_anomaly",
                                                    "instance_recall_anomaly", "pq_anomaly",
                                                    "pq_target", "anomaly_clusters",
                                                    *BANK_STATS) if k in m}),
                      file=sys.stderr, flush=True)
    summary = {}
    for setting in a.settings.split(","):
        for v in dict.fromkeys(r["variant"] for r in runs):
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
