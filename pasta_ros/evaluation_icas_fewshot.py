"""Few-shot anomaly detection rows of the iCAS evaluation: k normal shots drawn per seed, every
method's image score (the decoder, patch-kNN, GQS+MFM, their locally aggregated variants, the
``icas_tta`` head and the calibrated ``icas_fused`` score), image AUROC per method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.gqs import select_queries
from pasta_ros.core.icas.mask_pooling import mask_pool
from pasta_ros.core.icas.matching import feature_partition, mfm_normal
from pasta_ros.core.icas.model import ICASModel
from pasta_ros.core.icas.prompting import normal_prompt, score_normal
from pasta_ros.core.icas.tta import TTAHead
from pasta_ros.core.metrics import image_auroc
from pasta_ros.core.score_fusion import (
    GAIN_MARGIN_Z,
    FusionWeights,
    calibrate_fusion,
    fuse_scores,
)
from pasta_ros.data.icas_el_defects import paste_el_defects
from pasta_ros.data.icas_synth import paste_defects
from pasta_ros.evaluation_icas_data import Category
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

def full_size(score: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """``(h', w')`` score -> ``(H, W) float32`` at image size."""
    return F.interpolate(score[None, None], size=shape, mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def gqs_masks(model: ICASModel, feats: torch.Tensor) -> torch.Tensor:
    return feature_partition(feats, select_queries(feats, model.arch.decoder.queries))

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
            self.q_r[tag] = torch.cat([mask_pool(s, gqs_masks(model, s))[0] for s in fs])
            self.bank[tag] = torch.cat([s.flatten(2)[0].T for s in fs])

    def scores(self, model: ICASModel, f: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """Image scores of ``(1, C, h, w)`` target features per method, and the iCAS map."""
        s = score_normal(model, f, self.prompt)[0]
        out = {"icas": float(s.max())}
        for tag, ft in (("", f), ("_agg", local_aggregate(f))):
            out["patch_knn" + tag] = _knn(ft, self.bank[tag])
            out["gqs_mfm" + tag] = float(mfm_normal(ft, gqs_masks(model, ft), self.q_r[tag])
                                         .max())
        return out, s


class Shots:
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


def _calibrate(model: ICASModel, cat: Category, idx: list[int], shots: Shots,
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


def few_shot_seed(model: ICASModel, cat: Category, rng: np.random.Generator, k: int,
                   opts: FewShotOptions, shots: Shots, tta_rng: np.random.Generator
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
            maps[i] = full_size(s, cat.test_masks[i].shape)
        if weights is not None:
            comps["icas_fused"] = float(fuse_scores(comps, weights))
        for m, v in comps.items():
            scores.setdefault(m, []).append(v)
    record = {"shots": idx, "labels": list(cat.labels), "scores": scores,
              "calib": None if calib is None else [{c: v.tolist() for c, v in side.items()}
                                                   for side in calib]}
    return SeedResult({m: image_auroc(cat.labels, v) for m, v in scores.items()}, maps,
                      weights, record)
