"""The ``waw`` method: Weeds-are-Weird as reconstructed in PASTA §III-B (Fig. 4).

Calibration: object masks per image (ExG + point prompts, or a registry segmenter) ->
one embedding per object from its masked crop (:mod:`object_embed`, any registry backbone)
-> Target Feature Bag by popularity voting and hyperspheres (:mod:`waw`). Inference
(:class:`WawObjects`): the same masks and embeddings per frame, then feature voting; a rare
object is an anomaly.

Object masks (``waw_masks``):
- ``exg``: the paper's WaW: Excess Green vegetation mask, point prompts, one instance per
  point from the point segmenter ``waw_point_segmenter`` (:mod:`exg`,
  :mod:`pasta_ros.core.segmenters.points`: SAM 3 when ``sam3_weights`` is given, else the
  weight-free watershed); plants only (needs colour and green objects);
- ``segmenter``: the config's registry segmenter (``clusters``, or ``sam3`` with weights).
  ``clusters`` needs background clusters and a colour model: they come from PASTA's Phase 1
  (one scene-level K-Means, no anomaly analysis), stored in the model as for ``pasta``.

Defaults (PASTA Table III, the WaW row on PhenoBench): ``waw_k_sphere`` 100, ``waw_k_v`` 10.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pasta_ros.core import waw
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.errors import CalibrationError, ModelError
from pasta_ros.core.exg import WatershedPoints, exg_instances
from pasta_ros.core.features import FeatureExtractor, ImageSource
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.object_embed import embed_objects
from pasta_ros.core.segmenters.color_model import N_BINS

if TYPE_CHECKING:
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.segmenters.base import PointSegmenter, Segmenter

log = logging.getLogger(__name__)
PARAMS = ("waw_masks", "waw_k_sphere", "waw_k_v", "waw_vote_share", "waw_min_votes",
          "waw_exg_threshold", "waw_point_spacing", "waw_crop_size", "min_area", "segmenter",
          "waw_point_segmenter")


@dataclass
class WawObjects:
    """Per-image object masks and embeddings, and (with a bag) the feature vote.

    centers: ``(K, C) float32`` scene codebook for the ``clusters`` segmenter (segmenter
    route); bag ``(M, C) float32`` and radii ``(M,) float32`` once calibrated;
    point_segmenter grows the ExG route's instances from its point prompts."""

    extractor: FeatureExtractor
    params: dict
    segmenter: Segmenter | None = None
    centers: torch.Tensor | None = None
    bag: np.ndarray | None = None
    radii: np.ndarray | None = None
    point_segmenter: PointSegmenter | None = None

    @classmethod
    def from_model(cls, model: CalibratedModel, extractor: FeatureExtractor,
                   segmenter: Segmenter | None,
                   point_segmenter: PointSegmenter | None = None) -> WawObjects:
        """The runtime of a calibrated ``waw`` model (its settings come from the model).
        Without ``point_segmenter`` an ExG model runs the watershed, and one calibrated with
        SAM 3 point masks is refused (the masks, hence the features, would differ)."""
        params = model.method_params
        recorded = params.get("waw_point_segmenter", "watershed")  # older models: watershed
        if point_segmenter is None and params["waw_masks"] == "exg":
            if recorded != "watershed":
                raise ModelError(f"this WaW model was calibrated with {recorded} point masks: "
                                 "give the same checkpoint (sam3_weights) to run it")
            point_segmenter = WatershedPoints(params["min_area"])
        elif point_segmenter is not None and point_segmenter.name != recorded:
            raise ModelError(f"this WaW model was calibrated with {recorded} point masks, not "
                             f"{point_segmenter.name}: set waw_point_segmenter {recorded}")
        centers = torch.from_numpy(model.centers).to(extractor.device)
        return cls(extractor, params, segmenter, centers, model.method_arrays["bag"],
                   model.method_arrays["radii"], point_segmenter)

    def instance_ids(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(H', W', 3) uint8`` network-size image -> ``(H', W') int32`` object ids and the
        ``(h, w)`` cluster map when one was computed (segmenter route), else None."""
        p = self.params
        if p["waw_masks"] == "exg":
            return exg_instances(prepared, p["waw_exg_threshold"], p["waw_point_spacing"],
                                 p["min_area"], self.point_segmenter), None
        cmap = assign_clusters(self.extractor.features([prepared]), self.centers)[0]
        return self.segmenter.segment(prepared, cmap).astype(np.int32), cmap

    def embed(self, prepared: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``(N, C) float32`` embeddings of the N objects of ``ids``."""
        return embed_objects(self.extractor, prepared, ids, size=self.params["waw_crop_size"])

    def classify(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N,) bool`` anomaly flags and ``(N,) float32`` target-vote shares."""
        p = self.params
        return waw.vote(feats, self.bag, self.radii, p["waw_k_v"], p["waw_vote_share"])


def set_features(objects: WawObjects, source: ImageSource, label: str,
                 on_image: Callable[[], None]) -> tuple[np.ndarray, int]:
    """All object embeddings of one image set: ``(N, C) float32`` and the image count."""
    rows, n_images = [], 0
    for _, image in source():
        prepared = objects.extractor.prepare(image)
        ids, _ = objects.instance_ids(prepared)
        rows.append(objects.embed(prepared, ids))
        n_images += 1
        on_image()
    if not n_images:
        raise CalibrationError(f"the {label} set is empty: no readable images were found")
    feats = np.concatenate(rows) if rows else np.zeros((0, objects.extractor.channels))
    if not len(feats):
        how = (f"ExG > {objects.params['waw_exg_threshold']} (green vegetation)"
               if objects.params["waw_masks"] == "exg" else
               f"segmenter {objects.params['segmenter']}")
        raise CalibrationError(f"no objects found in the {label} set ({n_images} images) with "
                               f"{how}: for non-plant scenes use --waw-masks segmenter, for "
                               "plants lower --waw-exg-threshold")
    return feats.astype(np.float32), n_images


def _segmenter_stats(extractor, baseline, reference, empty, cfg, weights_hash, quiet
                     ) -> CalibratedModel:
    """PASTA Phase 1 for the ``clusters`` segmenter (background clusters + colour model)."""
    from pasta_ros.core.calibration import calibrate as pasta_calibrate

    pcfg = cfg.replace(object_codebook=False, split_clusters=False)
    return pasta_calibrate(extractor, baseline, reference, empty, pcfg,
                           weights_hash=weights_hash, quiet=quiet)


def _weight_free_stats(extractor: FeatureExtractor, cfg: PastaConfig,
                       weights_hash: str) -> CalibratedModel:
    """The model fields the ExG route does not use (one background cluster, flat colours)."""
    one = np.ones(1, np.float64)
    return CalibratedModel(
        backbone=cfg.backbone, weights_hash=weights_hash,
        input_size=(cfg.input_width, cfg.input_height), stride=extractor.info.stride,
        centers=np.zeros((1, extractor.channels), np.float32), p_baseline=one,
        p_reference=one.copy(), anomaly=np.zeros(1, bool), background=np.ones(1, bool),
        color_log_odds=np.zeros(N_BINS, np.float32), ratio_threshold=cfg.ratio_threshold,
        vote_threshold=cfg.vote_threshold, seed=cfg.seed, background_source="none",
        color_weight=extractor.color_weight)


def calibrate(extractor: FeatureExtractor, baseline: ImageSource, reference: ImageSource,
              empty: ImageSource | None, cfg: PastaConfig, *, weights_hash: str = "",
              quiet: bool = False, progress: Callable[[str, int], None] | None = None,
              cache_dir: str | Path | None = None) -> CalibratedModel:
    """Calibrate WaW; the signature of :func:`pasta_ros.core.calibration.calibrate`.

    ``empty`` is used by the segmenter route only (PASTA's background clusters).
    ``cache_dir`` is accepted for the common signature and unused: the object features are
    few and stay in memory."""
    from pasta_ros.core.segmenters import build_segmenter
    from pasta_ros.core.segmenters.points import build_point_segmenter

    t0 = time.perf_counter()
    params = {k: getattr(cfg, k) for k in PARAMS}
    point_segmenter = None
    if cfg.waw_masks == "segmenter":
        model = _segmenter_stats(extractor, baseline, reference, empty, cfg, weights_hash,
                                 quiet)
        segmenter = build_segmenter(cfg.segmenter, model, cfg)
    else:
        model, segmenter = _weight_free_stats(extractor, cfg, weights_hash), None
        point_segmenter = build_point_segmenter(cfg.waw_point_segmenter, cfg)
    params["waw_point_segmenter"] = point_segmenter.name if point_segmenter else "watershed"
    objects = WawObjects(extractor, params, segmenter,
                         torch.from_numpy(model.centers).to(extractor.device),
                         point_segmenter=point_segmenter)
    done = [0]

    def on_image() -> None:
        done[0] += 1
        if progress is not None:
            progress("features", done[0])

    base, n_base = set_features(objects, baseline, "baseline", on_image)
    ref, n_ref = set_features(objects, reference, "reference", on_image)
    if progress is not None:
        progress("feature_bag", done[0])
    bag, radii, votes = waw.target_bag(ref, base, cfg.waw_k_sphere, cfg.waw_k_v,
                                       cfg.waw_min_votes)
    log.info("WaW: %d baseline + %d reference object features, bag %d", len(base), len(ref),
             len(bag))
    model.method, model.method_params = "waw", params
    model.method_arrays = {"bag": bag, "radii": radii}
    model.stats = {"baseline_images": n_base, "reference_images": n_ref,
                   "baseline_features": len(base), "reference_features": len(ref),
                   "extracted_features": len(base) + len(ref), "bag_features": len(bag),
                   "median_radius": float(np.median(radii)),
                   "calibration_s": round(time.perf_counter() - t0, 2)}
    return model.finalize()
