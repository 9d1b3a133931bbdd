"""Markdown rows from scripts/bench_issue9.py JSON files: mean (std) over the seeds."""

import json
import sys

COLS = ("iou_target", "iou_anomaly", "patch_iou_anomaly", "instance_precision_anomaly",
        "instance_recall_anomaly", "pq_anomaly", "instance_precision_target",
        "instance_recall_target", "pq_target", "auroc")

print("| data | setting | variant | " + " | ".join(COLS) + " |")
print("|---" * (len(COLS) + 3) + "|")
for path in sys.argv[1:]:
    d = json.load(open(path))
    name = d["data"].rstrip("/").split("/")[-1]
    for key, row in d["summary"].items():
        setting, variant = key.split("/", 1)
        cells = [f"{row[c][0]:.1f} ({row[c][1]:.1f})" for c in COLS]
        print(f"| {name} | {setting} | {variant} | " + " | ".join(cells) + " |")
