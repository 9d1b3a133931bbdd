"""Evaluation on PASTA-layout datasets (one dataset = one defect category).

Per category and seed: anomaly-prompt segmentation (one anomalous test image with its mask is
the prompt, the other anomalous test images are segmented), interactive segmentation (one
random click inside each defect region, up to 3, on the image itself), and few-shot anomaly
detection with k normal shots drawn from ``reference/`` (image AUROC over all test images).
Side by side: a PatchCore-style patch-kNN baseline (same backbone, same shots) and the
training-free parts alone (GQS partition masks + MFM, the Table 7 ablation). Metrics: mIoU =
anomaly IoU averaged over categories, FB-IoU = mean of anomaly and background IoU, averaged;
mean and std over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.gqs import select_queries
from pasta_ros.core.icas.mask_pooling import mask_pool
from pasta_ros.core.icas.matching import feature_partition, mfm_anomaly, mfm_normal
from pasta_ros.core.icas.model import ICASModel
from pasta_ros.core.icas.prompting import (
    anomaly_prompt,
    area_mask,
    normal_prompt,
    score_anomaly,
    score_normal,
)
from pasta_ros.core.metrics import ConfusionMatrix, image_auroc, mean_std
from pasta_ros.data.images import list_images, read_image
from pasta_ros.data.layout import DatasetLayout, read_labels_csv, read_mask, test_pairs

SHOTS = (2, 4, 8)


@dataclass
class Category:
    """Encoded category: test features ``(1, C, h, w)`` each, ``(H, W) bool`` anomaly masks,
    0/1 labels; reference (normal) features."""

    name: str
    test_feats: list[torch.Tensor]
    test_masks: list[np.ndarray]
    labels: list[int]
    ref_feats: list[torch.Tensor]


def load_category(model: ICASModel, root: str | Path) -> Category:
    """Read and encode one PASTA-layout dataset (test/images, test/masks, reference/)."""
    layout = DatasetLayout.discover(root)
    labels_csv = read_labels_csv(layout.labels_csv) if layout.labels_csv else {}
    feats, masks, labels = [], [], []
    for stem, img_path, mask_path in test_pairs(layout):
        image = read_image(img_path)
        feats.append(model.encode([model.prepare(image)]))
        m = read_mask(mask_path) == 2
        masks.append(m)
        labels.append(int(labels_csv.get(stem, int(m.any()))))
    refs = [model.encode([model.prepare(read_image(p))]) for p in list_images(layout.reference)]
    return Category(Path(root).name, feats, masks, labels, refs)


def _full(score: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """``(h', w')`` score -> ``(H, W) float32`` at image size."""
    return F.interpolate(score[None, None], size=shape, mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def _gqs_masks(model: ICASModel, feats: torch.Tensor) -> torch.Tensor:
    return feature_partition(feats, select_queries(feats, model.arch.decoder.queries))


class _IoU:
    """Binary confusion per method."""

    def __init__(self) -> None:
        self.cm: dict[str, ConfusionMatrix] = {}

    def add(self, method: str, truth: np.ndarray, score: np.ndarray, thr: float) -> None:
        self.cm.setdefault(method, ConfusionMatrix(2)).add(truth.astype(np.uint8),
                                                          (score >= thr).astype(np.uint8))

    def result(self) -> dict[str, tuple[float, float]]:
        """method -> (anomaly IoU, FB-IoU)."""
        out = {}
        for k, cm in self.cm.items():
            iou = np.nan_to_num(cm.iou())
            out[k] = (float(iou[1]), float(iou.mean()))
        return out


def _anomaly_prompt_seed(model: ICASModel, cat: Category, rng: np.random.Generator,
                         ious: _IoU, thr: float, normal4: dict[int, np.ndarray]) -> None:
    bad = [i for i, m in enumerate(cat.test_masks) if m.any()]
    if len(bad) < 2:
        raise PastaError(f"category {cat.name}: anomaly prompting needs >= 2 anomalous test "
                         "images with masks")
    p = int(rng.choice(bad))
    mask = torch.from_numpy(cat.test_masks[p].astype(np.float32))[None]
    prompt = anomaly_prompt(model, cat.test_feats[p], mask)
    for i in bad:
        if i == p:
            continue
        f, truth = cat.test_feats[i], cat.test_masks[i]
        s = _full(score_anomaly(model, f, prompt)[0], truth.shape)
        ious.add("icas_anomaly_prompt", truth, s, thr)
        if i in normal4:
            ious.add("icas_both", truth, (s + normal4[i]) / 2, thr)
        g = mfm_anomaly(f, _gqs_masks(model, f), prompt.q_p, prompt.q_ntp)[0]
        ious.add("gqs_mfm_anomaly_prompt", truth, _full(g, truth.shape), thr)


def _interactive_seed(model: ICASModel, cat: Category, rng: np.random.Generator, ious: _IoU,
                      thr: float) -> None:
    for f, truth in zip(cat.test_feats, cat.test_masks):
        if not truth.any():
            continue
        n, comp = cv2.connectedComponents(truth.astype(np.uint8))
        clicks = []
        for c in rng.permutation(np.arange(1, n))[:3]:
            ys, xs = np.nonzero(comp == c)
            j = int(rng.integers(len(xs)))
            clicks.append((xs[j], ys[j]))
        m = torch.from_numpy(area_mask(truth.shape, clicks))[None]
        prompt = anomaly_prompt(model, f, m)
        ious.add("icas_interactive", truth, _full(score_anomaly(model, f, prompt)[0],
                                                  truth.shape), thr)


def patch_knn_score(feats: torch.Tensor, shots: list[torch.Tensor]) -> float:
    """PatchCore-style image score: max over target cells of the distance to the nearest
    cell of the normal shots (full memory bank, no coreset at these sizes)."""
    bank = torch.cat([s.flatten(2)[0].T for s in shots])
    return float(torch.cdist(feats.flatten(2)[0].T, bank).min(1).values.max())


def _few_shot_seed(model: ICASModel, cat: Category, rng: np.random.Generator, k: int,
                   ) -> tuple[dict[str, float], dict[int, np.ndarray]]:
    if len(cat.ref_feats) < k:
        raise PastaError(f"category {cat.name}: {k} shots requested but reference/ holds "
                         f"{len(cat.ref_feats)} images")
    shots = [cat.ref_feats[i] for i in rng.choice(len(cat.ref_feats), k, replace=False)]
    prompt = normal_prompt(model, shots)
    q_r = torch.cat([mask_pool(s, _gqs_masks(model, s))[0] for s in shots])
    scores: dict[str, list[float]] = {"icas": [], "patch_knn": [], "gqs_mfm": []}
    maps = {}
    for i, f in enumerate(cat.test_feats):
        s = score_normal(model, f, prompt)[0]
        maps[i] = _full(s, cat.test_masks[i].shape)
        scores["icas"].append(float(s.max()))
        scores["patch_knn"].append(patch_knn_score(f, shots))
        scores["gqs_mfm"].append(float(mfm_normal(f, _gqs_masks(model, f), q_r).max()))
    return {m: image_auroc(cat.labels, v) for m, v in scores.items()}, maps


@torch.no_grad()
def evaluate(model: ICASModel, roots: list[str | Path], seeds: list[int] = (0, 1, 2, 3, 4),
             shots: tuple[int, ...] = SHOTS, threshold: float = 0.5, progress: bool = False
             ) -> dict:
    """All metrics over the categories in ``roots``: ``{"segmentation": {method: {"miou":
    [mean, std], "fbiou": [mean, std]}}, "auroc": {"k<n>": {method: [mean, std]}}, ...}``
    (percent)."""
    from tqdm import tqdm

    model.eval()
    cats = [load_category(model, r) for r in tqdm(roots, disable=not progress, desc="encode")]
    seg: dict[str, dict[str, list[float]]] = {}
    auc: dict[str, dict[str, list[float]]] = {f"k{k}": {} for k in shots}
    for seed in tqdm(list(seeds), disable=not progress, desc="seeds"):
        per_cat: dict[str, list[tuple[float, float]]] = {}
        per_cat_auc: dict[str, dict[str, list[float]]] = {f"k{k}": {} for k in shots}
        for ci, cat in enumerate(cats):
            ious = _IoU()
            normal4: dict[int, np.ndarray] = {}
            for k in shots:
                rng = np.random.default_rng([seed, ci, k])
                res, maps = _few_shot_seed(model, cat, rng, k)
                if k == 4:
                    normal4 = maps
                    for i, m in maps.items():
                        if cat.test_masks[i].any():
                            ious.add("icas_normal_prompt", cat.test_masks[i], m, threshold)
                for m, v in res.items():
                    per_cat_auc[f"k{k}"].setdefault(m, []).append(v * 100)
            _anomaly_prompt_seed(model, cat, np.random.default_rng([seed, ci, 0]), ious,
                                 threshold, normal4)
            _interactive_seed(model, cat, np.random.default_rng([seed, ci, 1]), ious, threshold)
            for m, v in ious.result().items():
                per_cat.setdefault(m, []).append(v)
        for k, d in per_cat_auc.items():  # mean over categories, then mean/std over seeds
            for m, vals in d.items():
                auc[k].setdefault(m, []).append(float(np.nanmean(vals)))
        for m, vals in per_cat.items():
            d = seg.setdefault(m, {"miou": [], "fbiou": []})
            d["miou"].append(100 * float(np.mean([v[0] for v in vals])))
            d["fbiou"].append(100 * float(np.mean([v[1] for v in vals])))
    return {"categories": [c.name for c in cats], "seeds": list(seeds), "threshold": threshold,
            "segmentation": {m: {k: list(mean_std(v)) for k, v in d.items()}
                             for m, d in seg.items()},
            "auroc": {k: {m: list(mean_std(v)) for m, v in d.items()} for k, d in auc.items()}}
