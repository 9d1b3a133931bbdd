"""`make demo`: the main job on bundled data and the offline backbone, end to end.

Generates a small synthetic steel-sorting set (real scikit-image textures), calibrates PASTA
with efficientnet_lite0 (no labels used), evaluates it against the exact masks, segments the
test frames and writes everything to ``demo_out/``:

  demo_out/data/                      the generated dataset (baseline, reference, empty, test)
  demo_out/model/                     the calibrated model (manifest.json, arrays.npz)
  demo_out/model/report/              Fig. 1 (cluster_distributions.png), cluster overlays
  demo_out/segment/overlays/*.png     3-class overlays (blue target, red anomaly)
  demo_out/segment/labels/*.png       (H, W) uint8 label images {0, 1, 2}
  demo_out/segment/instances.json     instances per frame (bbox, area, centroid, class)
  demo_out/metrics.json               Evaluation A and B metrics
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from pasta_ros.cli import main as pasta


def run(step: str, argv: list[str]) -> None:
    t0 = time.perf_counter()
    print(f"\n== {step}: pasta {' '.join(argv)}", flush=True)
    code = pasta(["-q", *argv])
    if code != 0:
        sys.exit(f"demo step '{step}' failed with status {code}")
    print(f"== {step} done in {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    data, model = out / "data", out / "model"
    t0 = time.perf_counter()
    run("synth", ["synth", "--preset", "steel", "--out", str(data), "--seed", str(args.seed),
                  "--n-baseline", "32", "--n-reference", "16", "--n-empty", "6",
                  "--n-test", "10"])
    run("calibrate", ["calibrate", "--baseline", str(data / "baseline"),
                      "--reference", str(data / "reference"), "--empty", str(data / "empty"),
                      "--out", str(model), "--seed", str(args.seed)])
    run("evaluate", ["evaluate", "--model", str(model), "--test", str(data),
                     "--json", str(out / "metrics.json")])
    run("segment", ["segment", "--model", str(model), "--images", str(data / "test" / "images"),
                    "--out", str(out / "segment")])
    metrics = json.loads((out / "metrics.json").read_text())
    print("\nPASTA demo (synthetic steel, efficientnet_lite0, K=20, seed "
          f"{args.seed}) in {time.perf_counter() - t0:.0f} s")
    for key in ("iou_background", "iou_target", "iou_anomaly", "miou", "patch_iou_anomaly",
                "auroc", "ms_per_image"):
        print(f"  {key:>18}: {metrics[key]}")
    print(f"  outputs in {out}/ (Fig. 1: {model}/report/cluster_distributions.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
