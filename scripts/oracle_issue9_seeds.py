"""Issue 9: how many instances the touching-object split can recover from a perfect mask.

The ground-truth object mask (every instance pixel) goes through the watershed split, so
only the split is measured: target / anomaly instance recall at mask IoU >= 0.5 for the
distance rules of :func:`split_instances` (``seed_depth`` 0 = the core rule) and for an
experimental edge rule (seeds = mask pixels away from Canny edges of the image, grown by a
watershed on the morphological gradient), and the package's rule that grew from it
(``core/segmenters/edge_split.py``: ``split_edges`` 180 / 240 on the gray or colour image).
Usage: python scripts/oracle_issue9_seeds.py D [D ...]   (datasets from ``pasta synth``)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import watershed

from pasta_ros.core.segmenters.clusters import relabel_without_small, split_instances
from pasta_ros.core.segmenters.edge_split import edge_image, split_by_edges

MIN_AREA = 150


def edge_split(mask: np.ndarray, rgb: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``(H, W) bool`` mask + ``(H, W, 3) uint8`` image -> ``(H, W) int32`` instances."""
    gray = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    edges = cv2.dilate(cv2.Canny(gray, lo, hi), np.ones((3, 3), np.uint8)) > 0
    core = cv2.erode((mask & ~edges).astype(np.uint8), np.ones((3, 3), np.uint8))
    n, seeds, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= MIN_AREA // 2
    keep[0] = False
    lut = np.zeros(n, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    out = watershed(grad.astype(np.float32), lut[seeds], mask=mask).astype(np.int32)
    comps = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[1]
    unseeded = (out == 0) & mask  # a component without a seed stays whole
    out[unseeded] = comps[unseeded] + out.max() + 1
    return relabel_without_small(out, MIN_AREA)


def package_edge_split(mask: np.ndarray, rgb: np.ndarray, high: float, colour: bool,
                       ) -> np.ndarray:
    """The package's rule (``split_edges`` = ``high``, ``split_edges_colour`` = ``colour``)."""
    _, comps, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8,
                                                          ltype=cv2.CV_32S)
    return split_by_edges(comps, stats, edge_image(rgb, colour), high, MIN_AREA)


def recall(root: Path, split) -> tuple[float, float]:
    """(target, anomaly) instance recall in % of ``split(mask, rgb)`` over the test set."""
    hits = {1: [0, 0], 2: [0, 0]}
    for f in sorted((root / "test" / "instances").glob("*.png")):
        gt = cv2.imread(str(f), cv2.IMREAD_UNCHANGED).astype(np.int64)
        cls = cv2.imread(str(root / "test" / "masks" / f.name), cv2.IMREAD_UNCHANGED)
        rgb = cv2.cvtColor(cv2.imread(str(root / "test" / "images" / f.name)),
                           cv2.COLOR_BGR2RGB)
        pred = split(gt > 0, rgb)
        for c in (1, 2):
            for i in np.unique(gt[(cls == c) & (gt > 0)]):
                m = gt == i
                overlap = np.bincount(pred[m].ravel())
                overlap[0] = 0
                j = int(overlap.argmax())
                iou = overlap[j] / np.count_nonzero(m | (pred == j)) if j else 0.0
                hits[c][0] += iou >= 0.5
                hits[c][1] += 1
    return tuple(100.0 * hits[c][0] / max(hits[c][1], 1) for c in (1, 2))


def main() -> None:
    rules = {f"seed_depth {d}": (lambda m, _, d=d: split_instances(m, 0.5, MIN_AREA, d))
             for d in (0.0, 0.2, 0.3, 0.4, 0.5)}
    rules.update({f"edges Canny {lo}/{hi}": (lambda m, rgb, lo=lo, hi=hi: edge_split(m, rgb,
                                                                                   lo, hi))
                  for lo, hi in ((30, 90), (40, 120))})
    rules.update({f"package split_edges {h:.0f} {'colour' if c else 'gray'}":
                  (lambda m, rgb, h=h, c=c: package_edge_split(m, rgb, h, c))
                  for h in (180.0, 240.0) for c in (False, True)})
    print("| data | split rule | target recall | anomaly recall |\n|---|---|---|---|")
    for root in map(Path, sys.argv[1:]):
        for name, fn in rules.items():
            t, a = recall(root, fn)
            print(f"| {root.name} | {name} | {t:.1f} | {a:.1f} |", flush=True)


if __name__ == "__main__":
    main()
