"""The ``pasta_object`` method: PASTA plus an object-level vote (issue 14, variant).

Calibration: PASTA as usual (:func:`pasta_ros.core.calibration.calibrate`), then every
instance the segmenter finds in the baseline and reference images gets a descriptor
(:mod:`object_descriptors`: pooled patch features + standardised shape); a K-Means with
``pasta_object_clusters`` clusters on the baseline descriptors, and PASTA's frequency-ratio
rule on instance counts: an object cluster with ``P_ref / P_base < ratio_threshold`` is an
anomaly cluster. Inference (:class:`ObjectVote`): an instance is an anomaly when its patch
vote says so (PASTA) or its descriptor falls in an anomaly object cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pasta_ros.core import anomaly_analysis as aa
from pasta_ros.core.clustering import assign_clusters, cluster_counts, fit_kmeans
from pasta_ros.core.errors import CalibrationError
from pasta_ros.core.features import FeatureExtractor, ImageSource
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.object_descriptors import combine, instance_descriptors

if TYPE_CHECKING:
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.segmenters.base import Segmenter

log = logging.getLogger(__name__)


@dataclass
class ObjectVote:
    """Object clusters of a ``pasta_object`` model: centres ``(K_o, C+4) float32``, anomaly
    flags ``(K_o,) bool``, shape standardisation ``(4,)`` mean/std and the shape weight."""

    centers: np.ndarray
    anomaly: np.ndarray
    shape_mean: np.ndarray
    shape_std: np.ndarray
    shape_weight: float

    @classmethod
    def from_model(cls, model: CalibratedModel) -> ObjectVote:
        a = model.method_arrays
        return cls(a["object_centers"], a["object_anomaly"].astype(bool), a["shape_mean"],
                   a["shape_std"], float(model.method_params["pasta_object_shape_weight"]))

    def descriptors(self, feats: torch.Tensor, ids: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` features + ``(H, W)`` ids -> ``(N, C+4) float32`` descriptors."""
        pooled, shapes = instance_descriptors(feats, ids)
        return combine(pooled, shapes, self.shape_mean, self.shape_std, self.shape_weight)

    def anomalous(self, feats: torch.Tensor, ids: np.ndarray) -> np.ndarray:
        """``(N + 1,) bool``: instance i is in an anomaly object cluster (index 0: none)."""
        d = self.descriptors(feats, ids)
        if not len(d):
            return np.zeros(1, bool)
        k = assign_clusters(torch.from_numpy(d), torch.from_numpy(self.centers)).numpy()
        return np.concatenate([[False], self.anomaly[k]])


def _set_descriptors(extractor: FeatureExtractor, segmenter: Segmenter, centers: torch.Tensor,
                     source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features ``(N, C)`` and shapes ``(N, 4)`` of every instance of a set."""
    pooled, shapes = [], []
    for _, image in source():
        prepared = extractor.prepare(image)
        feats = extractor.features([prepared])
        ids = segmenter.segment(prepared, assign_clusters(feats, centers)[0])
        p, s = instance_descriptors(feats[0], ids)
        pooled.append(p)
        shapes.append(s)
    return np.concatenate(pooled), np.concatenate(shapes)


def calibrate(extractor: FeatureExtractor, baseline: ImageSource, reference: ImageSource,
              empty: ImageSource | None, cfg: PastaConfig, *, weights_hash: str = "",
              quiet: bool = False, progress: Callable[[str, int], None] | None = None,
              cache_dir: str | Path | None = None) -> CalibratedModel:
    """PASTA, then the object clusters; the signature of PASTA's ``calibrate``."""
    from pasta_ros.core.calibration import calibrate as pasta_calibrate
    from pasta_ros.core.segmenters import build_segmenter

    model = pasta_calibrate(extractor, baseline, reference, empty, cfg,
                            weights_hash=weights_hash, quiet=quiet, progress=progress,
                            cache_dir=cache_dir)
    segmenter = build_segmenter(cfg.segmenter, model, cfg)
    centers = torch.from_numpy(model.centers).to(extractor.device)
    base_p, base_s = _set_descriptors(extractor, segmenter, centers, baseline)
    ref_p, ref_s = _set_descriptors(extractor, segmenter, centers, reference)
    k = cfg.pasta_object_clusters
    if len(base_p) < k:
        raise CalibrationError(f"only {len(base_p)} baseline objects for "
                               f"pasta_object_clusters={k}: lower --pasta-object-clusters")
    mean, std = base_s.mean(0), base_s.std(0)
    w = cfg.pasta_object_shape_weight
    base_d, ref_d = combine(base_p, base_s, mean, std, w), combine(ref_p, ref_s, mean, std, w)
    obj_centers = fit_kmeans(base_d, k, seed=cfg.seed, epochs=10)
    ct = torch.from_numpy(obj_centers)
    p_base = aa.distribution(cluster_counts(assign_clusters(torch.from_numpy(base_d), ct), k))
    p_ref = aa.distribution(cluster_counts(assign_clusters(torch.from_numpy(ref_d), ct), k))
    obj_anomaly = aa.anomaly_clusters(p_ref, p_base, cfg.ratio_threshold)
    log.info("object clusters: %d baseline / %d reference objects, %d anomaly clusters",
             len(base_d), len(ref_d), int(obj_anomaly.sum()))
    model.method = "pasta_object"
    model.method_params = {"pasta_object_clusters": k, "pasta_object_shape_weight": w}
    model.method_arrays = {"object_centers": obj_centers.astype(np.float32),
                           "object_anomaly": obj_anomaly, "shape_mean": mean.astype(np.float32),
                           "shape_std": std.astype(np.float32),
                           "object_p_baseline": p_base, "object_p_reference": p_ref}
    model.stats |= {"baseline_objects": len(base_d), "reference_objects": len(ref_d),
                    "object_anomaly_clusters": int(obj_anomaly.sum())}
    return model.finalize()
