"""Evaluation on PASTA-layout datasets (one dataset = one defect category).

Per category and seed: anomaly-prompt segmentation (one anomalous test image with its mask is
the prompt, the other anomalous test images are segmented), interactive segmentation (one
random click inside each defect region, up to 3, on the image itself), and few-shot anomaly
detection with k normal shots drawn from ``reference/`` (image AUROC over all test images).
Side by side: a PatchCore-style patch-kNN baseline (same backbone, same shots) and the
training-free parts alone (GQS partition masks + MFM, the Table 7 ablation), each also on
locally aggregated features (``*_agg``, PatchCore's 3x3 neighbourhood mean), and
``icas_tta``: a test-time adaptation head fitted on the k shots with EL-like defects pasted
on them (``evaluation_icas_tta.py``); ``icas_fused``: the training-free scores with the
decoder's and the head's, fused by weights calibrated on the k shots alone (leave-one-out +
synthetic defects pasted on them, ``core/score_fusion.py``).
Sets with ``test/labels.csv`` and no ``test/masks`` (e.g. ELPV) give the image AUROC rows only.
Metrics: mIoU = anomaly IoU averaged over categories, FB-IoU = mean of anomaly and background
IoU, averaged; mean and std over seeds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.matching import mfm_anomaly
from pasta_ros.core.icas.model import ICASModel
from pasta_ros.core.icas.prompting import anomaly_prompt, area_mask, score_anomaly
from pasta_ros.core.metrics import ConfusionMatrix, aupro, mean_std
from pasta_ros.evaluation_icas_data import Category, load_category
from pasta_ros.evaluation_icas_fewshot import (
    SHOT_AUGMENTS,
    SHOTS,
    FewShotOptions,
    Shots,
    few_shot_seed,
    full_size,
    gqs_masks,
)


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
        s = full_size(score_anomaly(model, f, prompt)[0], truth.shape)
        ious.add("icas_anomaly_prompt", truth, s, thr)
        if i in normal4:
            ious.add("icas_both", truth, (s + normal4[i]) / 2, thr)
        g = mfm_anomaly(f, gqs_masks(model, f), prompt.q_p, prompt.q_ntp)[0]
        ious.add("gqs_mfm_anomaly_prompt", truth, full_size(g, truth.shape), thr)


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
        ious.add("icas_interactive", truth, full_size(score_anomaly(model, f, prompt)[0],
                                                  truth.shape), thr)

def _pixel_auroc(cat: Category, maps: dict[int, np.ndarray]) -> float:
    """Pixel AUROC of the k=4 iCAS maps pooled over a category's test images."""
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate([cat.test_masks[i].ravel() for i in maps])
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.concatenate([maps[i].ravel() for i in maps])))


def _pixel_aupro(cat: Category, maps: dict[int, np.ndarray]) -> float:
    """AUPRO (up to 30 % FPR, :func:`pasta_ros.core.metrics.aupro`) of the k=4 iCAS maps over
    a category's test images (the normal images' pixels count as normal pixels)."""
    return aupro([cat.test_masks[i] for i in maps], [maps[i] for i in maps])


def _segmentation(model: ICASModel, cat: Category, seed: int, ci: int, threshold: float,
                  normal4: dict[int, np.ndarray]) -> dict[str, tuple[float, float]]:
    ious = _IoU()
    for i, m in normal4.items():
        if cat.test_masks[i].any():
            ious.add("icas_normal_prompt", cat.test_masks[i], m, threshold)
    _anomaly_prompt_seed(model, cat, np.random.default_rng([seed, ci, 0]), ious, threshold,
                         normal4)
    _interactive_seed(model, cat, np.random.default_rng([seed, ci, 1]), ious, threshold)
    return ious.result()


def _summary(d: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    return {k: {m: list(mean_std(v)) for m, v in row.items()} for k, row in d.items() if row}


@torch.no_grad()
def evaluate(model: ICASModel, roots: list[str | Path], seeds: list[int] = (0, 1, 2, 3, 4),
             shots: tuple[int, ...] = SHOTS, threshold: float = 0.5, progress: bool = False,
             options: FewShotOptions = FewShotOptions()) -> dict:
    """All metrics over the categories in ``roots``: ``{"segmentation": {method: {"miou":
    [mean, std], "fbiou": [mean, std]}}, "auroc": {"k<n>": {method: [mean, std]}},
    "pixel_auroc": {"k4": {"icas": [mean, std]}}, "aupro": {"k4": {"icas": [mean, std]}}
    (up to 30 % FPR), "fusion": {"k<n>": {"weight": {component:
    [mean, std]}}}, "notes": [...]}`` (percent). Categories without ``test/masks`` (labels
    only) give image AUROC rows only (no pixel AUROC or AUPRO); the notes name them."""
    from tqdm import tqdm

    model.eval()
    cats = [load_category(model, r) for r in tqdm(roots, disable=not progress, desc="encode")]
    views = [Shots(model, c, SHOT_AUGMENTS[options.augment]) for c in cats]
    seg: dict[str, dict[str, list[float]]] = {}
    auc: dict[str, dict[str, list[float]]] = {f"k{k}": {} for k in shots}
    pix: dict[str, dict[str, list[float]]] = {"k4": {}} if 4 in shots else {}
    pro: dict[str, dict[str, list[float]]] = {"k4": {}} if 4 in shots else {}
    fus: dict[str, dict[str, list[float]]] = {f"k{k}": {} for k in shots}
    dump: list[dict] = []
    notes = [f"{c.name}: labels only (no test/masks): segmentation, pixel AUROC and AUPRO "
             "skipped"
             for c in cats if not c.has_masks]
    for seed in tqdm(list(seeds), disable=not progress, desc="seeds"):
        per_cat: dict[str, list[tuple[float, float]]] = {}
        per_cat_auc: dict[str, dict[str, list[float]]] = {f"k{k}": {} for k in shots}
        per_cat_pix: list[float] = []
        per_cat_pro: list[float] = []
        for ci, cat in enumerate(cats):
            normal4: dict[int, np.ndarray] = {}
            for k in shots:
                rng = np.random.default_rng([seed, ci, k])
                r = few_shot_seed(model, cat, rng, k, options, views[ci],
                                   np.random.default_rng([seed, ci, k, 1]))
                normal4 = r.maps if k == 4 else normal4
                for m, v in r.auroc.items():
                    per_cat_auc[f"k{k}"].setdefault(m, []).append(v * 100)
                for c, w in (r.weights.weight.items() if r.weights else ()):
                    fus[f"k{k}"].setdefault(c, []).append(w)
                if options.keep_scores:
                    dump.append({"category": cat.name, "seed": seed, "k": k} | r.record)
            if not cat.has_masks:
                continue
            if normal4:
                per_cat_pix.append(100 * _pixel_auroc(cat, normal4))
                per_cat_pro.append(100 * _pixel_aupro(cat, normal4))
            for m, v in _segmentation(model, cat, seed, ci, threshold, normal4).items():
                per_cat.setdefault(m, []).append(v)
        for k, d in per_cat_auc.items():  # mean over categories, then mean/std over seeds
            for m, vals in d.items():
                auc[k].setdefault(m, []).append(float(np.nanmean(vals)))
        if per_cat_pix and pix:
            pix["k4"].setdefault("icas", []).append(float(np.nanmean(per_cat_pix)))
            pro["k4"].setdefault("icas", []).append(float(np.nanmean(per_cat_pro)))
        for m, vals in per_cat.items():
            d = seg.setdefault(m, {"miou": [], "fbiou": []})
            d["miou"].append(100 * float(np.mean([v[0] for v in vals])))
            d["fbiou"].append(100 * float(np.mean([v[1] for v in vals])))
    return {"categories": [c.name for c in cats], "seeds": list(seeds), "threshold": threshold,
            "input_size": list(model.input_size),
            "shot_augment": options.augment, "calib_defects": options.calib_defects,
            "tta_copies": options.tta.copies, "calib_style": options.calib_style,
            "tta_anchor": options.tta_anchor,
            "segmentation": _summary(seg), "auroc": _summary(auc), "pixel_auroc": _summary(pix),
            "aupro": _summary(pro),
            "fusion": {k: {"weight": {c: list(mean_std(v)) for c, v in d.items()}}
                       for k, d in fus.items() if d}, "fusion_margin_z": options.margin_z,
            "notes": notes} | ({"scores": dump} if options.keep_scores else {})
