"""`pasta bench fusion | frame | memory`: the speed and memory targets, measured.

fusion: assignment + fusion + outputs at 910x512 with 20 instances, ours (torch, vectorised)
        vs a straightforward reference (sklearn ``predict`` + per-mask numpy loops), same
        inputs, outputs checked equal, in one run.
frame:  whole-frame latency per stage, default pipeline vs torch-eager reference, same frames.
memory: peak RSS of calibrating N baseline images at 910x512 in a fresh process, for
        N/10 and N images, to show the peak does not grow with N.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from argparse import Namespace

import cv2
import numpy as np
import torch
from sklearn.cluster import KMeans

from pasta_ros.bench.machine import machine
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.fusion import fuse
from pasta_ros.core.timing import median_ms


def synthetic_instances(height: int, width: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(H, W) int32`` map with ``n`` disjoint elliptical instances (later ones on top)."""
    ids = np.zeros((height, width), np.int32)
    for i in range(1, n + 1):
        center = (int(rng.integers(40, width - 40)), int(rng.integers(40, height - 40)))
        axes = (int(rng.integers(15, 45)), int(rng.integers(15, 45)))
        cv2.ellipse(ids, center, axes, float(rng.uniform(0, 180)), 0, 360, i, -1)
    return ids


def reference_fusion(rows: np.ndarray, km: KMeans, anomaly: np.ndarray, ids: np.ndarray,
                     grid: tuple[int, int], vote: float) -> tuple[np.ndarray, list]:
    """The straightforward version: sklearn predict, then a numpy loop per mask."""
    h, w = ids.shape
    cmap = km.predict(rows).reshape(grid)
    rr = (np.arange(h) * grid[0]) // h
    cc = (np.arange(w) * grid[1]) // w
    anom_px = anomaly[cmap][rr[:, None], cc[None, :]]
    labels = np.zeros((h, w), np.uint8)
    out = []
    for i in range(1, int(ids.max()) + 1):
        mask = ids == i
        area = int(mask.sum())
        if area == 0:
            continue
        share = float(anom_px[mask].mean())
        label = 2 if share > vote else 1
        labels[mask] = label
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        out.append((label, share, (x0, y0, x1 - x0 + 1, y1 - y0 + 1), area,
                    (xs.mean(), ys.mean()), mask[y0:y1 + 1, x0:x1 + 1]))
    return labels, out


def bench_fusion(args: Namespace) -> dict:
    """Ours vs reference at 912x512 (stride 8 -> 64x114 grid, C=152, K=20, 20 instances)."""
    rng = np.random.default_rng(0)
    h, w, c, k, stride = 512, 912, 152, 20, 8
    grid = (h // stride, w // stride)
    feats = torch.from_numpy(rng.standard_normal((1, c, *grid)).astype(np.float32))
    rows = torch.nn.functional.normalize(feats.permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    km = KMeans(n_clusters=k, n_init=1, random_state=0, max_iter=5).fit(rows.numpy())
    centers = torch.from_numpy(km.cluster_centers_.astype(np.float32))
    anomaly = np.zeros(k, bool)
    anomaly[:3] = True
    lut = torch.from_numpy(anomaly)
    ids = synthetic_instances(h, w, 20, rng)

    def ours():
        cmap = assign_clusters(feats, centers)[0]
        return fuse(ids, lut[cmap], 0.1)

    def ref():
        return reference_fusion(rows.numpy(), km, anomaly, ids, grid, 0.1)

    same = np.array_equal(ours().labels, ref()[0])
    t_ours, t_ref = median_ms(ours, args.repeats), median_ms(ref, max(5, args.repeats // 5))
    return {"bench": "fusion", "size": f"{w}x{h}", "instances": int(ids.max()), "k": k,
            "channels": c, "ours_ms": round(t_ours, 3), "reference_ms": round(t_ref, 3),
            "speedup": round(t_ref / t_ours, 1), "outputs_equal": bool(same), **machine()}


def icas_vote(mode: str, normal: list[np.ndarray], pipeline=None):
    """The node's iCAS vote for ``bench frame --icas``: the shipped checkpoint, 4 normal shots
    (targets-only frames); None for 'off'. With ``pipeline``: scoring on its backbone
    features (one encoder pass) when it can, as the node does."""
    if mode == "off":
        return None
    from pasta_ros.core.icas.prompting import ICASPredictor
    from pasta_ros.core.icas.vote import IcasVote

    predictor = ICASPredictor.from_checkpoint()
    if pipeline is not None:
        from pasta_ros.core.icas.vote import SHARED_MAX_CELLS

        pipeline.share_icas_backbone(predictor, SHARED_MAX_CELLS)
    predictor.set_normal_prompt(normal)
    return IcasVote(predictor, mode)


MEMORY_CHILD = """
import sys, json, numpy as np
from pasta_ros.bench.machine import peak_rss_mb
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.calibration import calibrate
from pasta_ros.core.features import FeatureExtractor
from pasta_ros.data.synth import render_scene
n = int(sys.argv[1])
def source(count, targets_only):
    def gen():
        rng = np.random.default_rng(count)
        for i in range(count):
            rgb, _, _ = render_scene("steel", rng, 910, 512, int(rng.integers(3, 9)),
                                     0 if targets_only else int(rng.integers(0, 4)))
            yield str(i), rgb
    return gen
import tempfile, time
from pasta_ros.pipeline import build_extractor
cfg = PastaConfig().replace(backend=sys.argv[2]) if len(sys.argv) > 2 else PastaConfig()
with tempfile.TemporaryDirectory() as tmp:  # backend onnxruntime: the graph's cache
    ext = build_extractor(cfg, cache_dir=tmp)
    t0 = time.perf_counter()
    model = calibrate(ext, source(n, False), source(max(4, n // 10), True), None, cfg,
                      quiet=True)
    seconds = time.perf_counter() - t0
peak = peak_rss_mb()  # VmHWM: ru_maxrss would carry the parent's peak (see peak_rss_mb)
print(json.dumps({"images": n, "peak_rss_mb": peak, "backend": cfg.backend,
                  "calibrate_s": round(seconds, 1),
                  "anomaly_clusters": int(model.anomaly.sum())}))
"""


def bench_memory(args: Namespace) -> dict:
    """Peak RSS of a calibration child process for N/10 and N baseline images."""
    runs = []
    for n in (max(10, args.images // 10), args.images):
        t0 = time.perf_counter()
        backend = getattr(args, "backend", None) or "onnxruntime"
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), backend],
                             check=True, capture_output=True, text=True)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
    return {"bench": "memory", "size": "910x512", "runs": runs, **machine()}

