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

import hashlib
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
from pasta_ros.core.icas.tta import TTAHead
from pasta_ros.core.metrics import ConfusionMatrix, aupro, image_auroc, mean_std
from pasta_ros.core.score_fusion import (
    GAIN_MARGIN_Z,
    FusionWeights,
    calibrate_fusion,
    fuse_scores,
)
from pasta_ros.data.icas_el_defects import paste_el_defects
from pasta_ros.data.icas_synth import paste_defects
from pasta_ros.data.images import list_images, read_image_channels
from pasta_ros.data.layout import DatasetLayout, read_labels_csv, read_mask, test_items
from pasta_ros.evaluation_icas_tta import TTAFit, TTAOptions, defect_copies

SHOTS = (2, 4, 8)
# Views of each normal shot added to the memory (the k shots themselves are always the first).
SHOT_AUGMENTS = {"none": 1, "flip": 4, "dihedral": 8}
# What the fusion calibration pastes on the shots: icas_synth's generic defects (scratches,
# spots, ... of many textures) or EL-like ones (data/icas_el_defects: cracks, dark areas).
CALIB_STYLES = {"generic": paste_defects, "el": paste_el_defects}
LOCAL_AGG = 3  # neighbourhood of the *_agg rows (PatchCore's default)
# Training-free scores the icas_fused row trusts; the decoder joins only when it beats them on
# the shot calibration (core/score_fusion.py). Chosen on the ELPV dev half (BENCHMARKS.md).
FUSION_ANCHORS = ("gqs_mfm_agg", "patch_knn_agg")
# Whether the icas_tta head is trusted as an anchor (BENCHMARKS.md "Test-time adaptation head").
TTA_ANCHOR = True


@dataclass
class Category:
    """Encoded category: test features ``(1, C, h, w)`` each, ``(H, W) bool`` anomaly masks
    (None for a labels-only set), 0/1 labels; reference (normal) features and their prepared
    ``(h', w', 3) uint8`` images (for shot augmentation and the fusion calibration)."""

    name: str
    test_feats: list[torch.Tensor]
    test_masks: list[np.ndarray | None]
    labels: list[int]
    ref_feats: list[torch.Tensor]
    ref_images: list[np.ndarray]

    @property
    def has_masks(self) -> bool:
        return all(m is not None for m in self.test_masks)


def _check_uniform(kinds: dict[Path, tuple[int, int, int]]) -> None:
    """One size and one channel count per category, else PastaError naming two files."""
    first, k0 = next(iter(kinds.items()))
    for path, k in kinds.items():
        if k != k0:
            what = "channels" if k[:2] == k0[:2] else "sizes"
            raise PastaError(f"mixed image {what} in one category: {first} is {k0[1]}x{k0[0]} "
                             f"with {k0[2]} channel(s), {path} is {k[1]}x{k[0]} with {k[2]}; "
                             "convert the set to one size and one format (gray or colour)")


def load_category(model: ICASModel, root: str | Path) -> Category:
    """Read and encode one dataset: ``reference/`` (normal shots) and ``test/images`` with
    ``test/masks`` or, labels only, ``test/labels.csv``. PastaError when a reference image is
    also a test image (same pixels: a shot would leak into the test set) or sizes / channels
    are mixed."""
    layout = DatasetLayout.for_test(root)
    items = test_items(layout)
    labels_csv = read_labels_csv(layout.labels_csv) if layout.labels_csv else {}
    ref_paths = list_images(layout.reference)
    kinds, read = {}, {}
    for path in [p for _, p, _ in items] + ref_paths:
        image, channels = read_image_channels(path)
        kinds[path], read[path] = (*image.shape[:2], channels), image
    _check_uniform(kinds)
    digest = lambda p: hashlib.sha1(read[p].tobytes()).hexdigest()  # noqa: E731
    test_digests = {digest(p): p for _, p, _ in items}
    leaked = [(p, test_digests[digest(p)]) for p in ref_paths if digest(p) in test_digests]
    if leaked:
        raise PastaError(f"{len(leaked)} reference images are also test images (e.g. "
                         f"{leaked[0][0]} = {leaked[0][1]}); shots must be disjoint from the "
                         "test images")
    feats, masks, labels = [], [], []
    for stem, img_path, mask_path in items:
        feats.append(model.encode([model.prepare(read[img_path])]))
        m = read_mask(mask_path) == 2 if mask_path is not None else None
        masks.append(m)
        if stem not in labels_csv and m is None:
            raise PastaError(f"{layout.labels_csv} has no label for test image {stem}")
        labels.append(int(labels_csv.get(stem, int(m.any()) if m is not None else 0)))
    ref_images = [model.prepare(read[p]) for p in ref_paths]
    refs = [model.encode([im]) for im in ref_images]
    return Category(Path(root).name, feats, masks, labels, refs, ref_images)


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
    return _knn(feats, torch.cat([s.flatten(2)[0].T for s in shots]))


def _knn(feats: torch.Tensor, bank: torch.Tensor) -> float:
    return float(torch.cdist(feats.flatten(2)[0].T, bank).min(1).values.max())


@dataclass(frozen=True)
class FewShotOptions:
    """augment: views per shot in the memory (SHOT_AUGMENTS: none, flip = 4 flips,
    dihedral = 8 flips and rotations); calib_defects: synthetic-defect copies per shot for the
    fusion calibration (0: no fused row); margin_z: the fusion gate's margin in standard
    errors (:func:`calibrate_fusion`); keep_scores: return every per-image and calibration
    score (``scores`` in the result); tta: the test-time adaptation head of the ``icas_tta``
    row (:class:`TTAOptions`, ``copies=0``: no such row); calib_style: the calibration
    defects (:data:`CALIB_STYLES`); tta_anchor: ``icas_tta`` is one of the fusion's anchors
    (weight 1) where it has calibration scores, instead of a gated component."""

    augment: str = "none"
    calib_defects: int = 2
    margin_z: float = GAIN_MARGIN_Z
    keep_scores: bool = False
    tta: TTAOptions = TTAOptions()
    calib_style: str = "generic"
    tta_anchor: bool = TTA_ANCHOR

    def __post_init__(self) -> None:
        if self.augment not in SHOT_AUGMENTS:
            raise PastaError(f"shot augmentation must be one of {', '.join(SHOT_AUGMENTS)}, "
                             f"got {self.augment!r}")
        if self.calib_style not in CALIB_STYLES:
            raise PastaError(f"calibration style must be one of {', '.join(CALIB_STYLES)}, "
                             f"got {self.calib_style!r}")
        if self.calib_defects < 0:
            raise PastaError(f"calib_defects must be >= 0, got {self.calib_defects}")
        if not self.margin_z >= 0:
            raise PastaError(f"the fusion gain margin must be >= 0, got {self.margin_z}")


_VIEWS = (lambda x: x, lambda x: x[:, ::-1], lambda x: x[::-1], lambda x: x[::-1, ::-1],
          lambda x: np.rot90(x, 1), lambda x: np.rot90(x, 3), lambda x: x.transpose(1, 0, 2),
          lambda x: x[::-1, ::-1].transpose(1, 0, 2))


def local_aggregate(feats: torch.Tensor, size: int = LOCAL_AGG) -> torch.Tensor:
    """PatchCore's local neighbourhood aggregation: ``(B, C, h, w)`` -> same shape, each cell
    the mean of its ``size x size`` neighbours (borders: of those inside the grid)."""
    return F.avg_pool2d(feats, size, 1, size // 2, count_include_pad=False)


class _Memory:
    """What k normal shots (and their views) give every method: the decoder's NormalPrompt,
    and, on the raw and on the locally aggregated features, the GQS+MFM mask embeddings q_r
    and the patch-kNN bank."""

    def __init__(self, model: ICASModel, feats: list[torch.Tensor]) -> None:
        self.prompt = normal_prompt(model, feats, calibrate=False)
        self.q_r, self.bank = {}, {}
        for tag, fs in (("", feats), ("_agg", [local_aggregate(f) for f in feats])):
            self.q_r[tag] = torch.cat([mask_pool(s, _gqs_masks(model, s))[0] for s in fs])
            self.bank[tag] = torch.cat([s.flatten(2)[0].T for s in fs])

    def scores(self, model: ICASModel, f: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """Image scores of ``(1, C, h, w)`` target features per method, and the iCAS map."""
        s = score_normal(model, f, self.prompt)[0]
        out = {"icas": float(s.max())}
        for tag, ft in (("", f), ("_agg", local_aggregate(f))):
            out["patch_knn" + tag] = _knn(ft, self.bank[tag])
            out["gqs_mfm" + tag] = float(mfm_normal(ft, _gqs_masks(model, ft), self.q_r[tag])
                                         .max())
        return out, s


class _Shots:
    """Encoded views of the reference images, each encoded once per category."""

    def __init__(self, model: ICASModel, cat: Category, views: int) -> None:
        self.model, self.cat, self.views = model, cat, views
        self.cache: dict[int, list[torch.Tensor]] = {}

    def __call__(self, i: int) -> list[torch.Tensor]:
        if i not in self.cache:
            im = self.cat.ref_images[i]
            self.cache[i] = [self.cat.ref_feats[i]] + [
                self.model.encode([np.ascontiguousarray(v(im))]) for v in _VIEWS[1:self.views]]
        return self.cache[i]


CalibScores = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def _calib_scores(model: ICASModel, mem: _Memory, head: TTAHead | None, f: torch.Tensor
                  ) -> dict[str, float]:
    return mem.scores(model, f)[0] | ({"icas_tta": head.score(f)} if head is not None else {})


def _calibrate(model: ICASModel, cat: Category, idx: list[int], shots: _Shots,
               rng: np.random.Generator, n_defects: int, tta: TTAFit | None = None,
               style: str = "generic") -> CalibScores:
    """Fusion calibration scores from the k shots alone, per component: each shot against
    the other k-1 (normal, ``(k,)``) and ``n_defects`` copies of it with synthetic defects
    (anomalous, ``(k * n_defects,)``, :data:`CALIB_STYLES` ``style``); ``icas_tta`` from
    the head fitted without that shot (left out when k-1 shots cannot fit it)."""
    normal: dict[str, list[float]] = {}
    anomalous: dict[str, list[float]] = {}
    for p, i in enumerate(idx):
        mem = _Memory(model, [f for j in idx if j != i for f in shots(j)])
        head = tta.leave_out(p) if tta is not None else None
        for c, v in _calib_scores(model, mem, head, cat.ref_feats[i]).items():
            normal.setdefault(c, []).append(v)
        for _ in range(n_defects):
            img, _ = CALIB_STYLES[style](rng, cat.ref_images[i], int(rng.integers(1, 3)))
            for c, v in _calib_scores(model, mem, head, model.encode([img])).items():
                anomalous.setdefault(c, []).append(v)
    if len(normal.get("icas_tta", ())) != len(idx):
        normal.pop("icas_tta", None), anomalous.pop("icas_tta", None)
    return ({c: np.asarray(v) for c, v in normal.items()},
            {c: np.asarray(v) for c, v in anomalous.items()})


def draw_shots(n_reference: int, k: int, rng: np.random.Generator, name: str = "") -> list[int]:
    """k distinct reference indices, seeded by ``rng``; PastaError when fewer than k exist."""
    if n_reference < k:
        raise PastaError(f"category {name}: {k} shots requested but reference/ holds "
                         f"{n_reference} images")
    return [int(i) for i in rng.choice(n_reference, k, replace=False)]


@dataclass
class SeedResult:
    """One draw of k shots: image AUROC per method, the iCAS maps (masked sets only), the
    fusion weights (None without calibration) and the raw scores behind them (``record``:
    per-image component scores and the calibration scores, for ``--dump-scores``)."""

    auroc: dict[str, float]
    maps: dict[int, np.ndarray]
    weights: FusionWeights | None
    record: dict


def _fit_tta(model: ICASModel, cat: Category, idx: list[int], opts: TTAOptions,
             rng: np.random.Generator) -> TTAFit | None:
    if not opts.copies or len(idx) < (2 if opts.config.knn else 1):
        return None
    copies = defect_copies(model, [cat.ref_images[i] for i in idx], opts.copies, rng)
    return TTAFit([cat.ref_feats[i] for i in idx], copies, opts.config)


def _few_shot_seed(model: ICASModel, cat: Category, rng: np.random.Generator, k: int,
                   opts: FewShotOptions, shots: _Shots, tta_rng: np.random.Generator
                   ) -> SeedResult:
    """Every method's scores for one draw of k shots (see :class:`SeedResult`);
    ``tta_rng`` seeds the defect copies of the ``icas_tta`` head only, so that the other
    rows do not depend on whether it runs."""
    idx = draw_shots(len(cat.ref_feats), k, rng, cat.name)
    mem = _Memory(model, [f for i in idx for f in shots(i)])
    tta = _fit_tta(model, cat, idx, opts.tta, tta_rng)
    calib = (_calibrate(model, cat, idx, shots, rng, opts.calib_defects, tta, opts.calib_style)
             if opts.calib_defects and k >= 2 else None)
    anchors = FUSION_ANCHORS + (("icas_tta",) if opts.tta_anchor and calib
                                and "icas_tta" in calib[0] else ())
    weights = calibrate_fusion(*calib, anchors, opts.margin_z) if calib else None
    scores: dict[str, list[float]] = {}
    maps = {}
    for i, f in enumerate(cat.test_feats):
        comps, s = mem.scores(model, f)
        if tta is not None:
            comps["icas_tta"] = tta.head.score(f)
        if cat.test_masks[i] is not None:
            maps[i] = _full(s, cat.test_masks[i].shape)
        if weights is not None:
            comps["icas_fused"] = float(fuse_scores(comps, weights))
        for m, v in comps.items():
            scores.setdefault(m, []).append(v)
    record = {"shots": idx, "labels": list(cat.labels), "scores": scores,
              "calib": None if calib is None else [{c: v.tolist() for c, v in side.items()}
                                                   for side in calib]}
    return SeedResult({m: image_auroc(cat.labels, v) for m, v in scores.items()}, maps,
                      weights, record)


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
    views = [_Shots(model, c, SHOT_AUGMENTS[options.augment]) for c in cats]
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
                r = _few_shot_seed(model, cat, rng, k, options, views[ci],
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
            "shot_augment": options.augment, "calib_defects": options.calib_defects,
            "tta_copies": options.tta.copies, "calib_style": options.calib_style,
            "tta_anchor": options.tta_anchor,
            "segmentation": _summary(seg), "auroc": _summary(auc), "pixel_auroc": _summary(pix),
            "aupro": _summary(pro),
            "fusion": {k: {"weight": {c: list(mean_std(v)) for c, v in d.items()}}
                       for k, d in fus.items() if d}, "fusion_margin_z": options.margin_z,
            "notes": notes} | ({"scores": dump} if options.keep_scores else {})
