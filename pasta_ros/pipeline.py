"""The pipeline wrapper used by the CLI and the ROS node: image in, 3-class mask out.

``PastaPipeline.process(image)``: resize -> backbone -> nearest-centroid clusters ->
anomaly patches (Evaluation A) -> segmenter instances -> mask-feature fusion (Evaluation B).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from pasta_ros.core.backbones import build_backbone, weights_fingerprint
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.config import PastaConfig
from pasta_ros.core.distractor_bank import drop_distractors, unit_features
from pasta_ros.core.errors import ModelError
from pasta_ros.core.features import FeatureExtractor, resolve_device
from pasta_ros.core.fusion import Instance, fuse, upsample_nearest
from pasta_ros.core.methods import METHODS
from pasta_ros.core.model_io import CalibratedModel, load_model
from pasta_ros.core.pasta_object import ObjectVote
from pasta_ros.core.preprocess import network_size
from pasta_ros.core.segmenters import RUNTIME_FIELDS, Segmenter, build_segmenter
from pasta_ros.core.segmenters.base import PointSegmenter
from pasta_ros.core.segmenters.points import build_point_segmenter
from pasta_ros.core.threads import configure_threads
from pasta_ros.core.waw_method import WawObjects

# methods whose frames need only the cluster map (the fused graph); the others read features
FUSABLE = ("pasta",)
QUANT_IMAGES = 10  # baseline images kept for int8 calibration (8 calibrate, 2 check)

if TYPE_CHECKING:
    from pasta_ros.core.icas.prompting import ICASPredictor
    from pasta_ros.core.icas.vote import IcasVote


@dataclass
class FrameResult:
    """One processed frame, in the input image's pixels.

    labels ``(H, W) uint8`` {0 background, 1 target, 2 anomaly}; instances with bbox/centroid
    in input pixels; cluster_map ``(h, w) int64`` and anomaly_patches ``(h, w) bool`` on the
    patch grid; timings in milliseconds per stage.
    """

    labels: np.ndarray
    instances: list[Instance]
    cluster_map: np.ndarray
    anomaly_patches: np.ndarray
    model_id: str
    timings: dict[str, float] = field(default_factory=dict)
    vote: str = "pasta"  # what marked the anomaly patches: 'pasta', 'icas', 'pasta+icas', 'waw'

    def anomaly_map(self) -> np.ndarray:
        """Evaluation A: ``(H, W) bool`` anomaly patches upsampled nearest to the image."""
        h, w = self.labels.shape
        return upsample_nearest(torch.from_numpy(self.anomaly_patches), h, w).numpy()

    def anomaly_score(self) -> float:
        """Image-level anomaly score: the share of patches in anomaly clusters."""
        return float(self.anomaly_patches.mean())


def check_model_matches(model: CalibratedModel, cfg: PastaConfig, explicit: set[str]) -> None:
    """Raise ModelError when the model's method is unknown here or settings the user gave
    explicitly contradict the model."""
    if model.method not in METHODS:
        raise ModelError(f"the model was calibrated with method {model.method!r}, which this "
                         f"pasta_ros does not have (available: {', '.join(METHODS)}); "
                         "recalibrate")
    if "backbone" in explicit and cfg.backbone != model.backbone:
        raise ModelError(f"the model was calibrated with backbone {model.backbone!r} but "
                         f"{cfg.backbone!r} was requested; recalibrate or drop the option")
    size = (cfg.input_width, cfg.input_height)
    if explicit & {"input_width", "input_height"} and size != tuple(model.input_size):
        raise ModelError(f"the model was calibrated at input size {model.input_size[0]}x"
                         f"{model.input_size[1]} but {size[0]}x{size[1]} was requested")


def default_cache_dir() -> Path:
    """Where exported graphs go when no model directory is at hand (``pasta evaluate
    --data``, a recalibration in progress): ``$XDG_CACHE_HOME/pasta_ros/engines``."""
    import os

    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "pasta_ros" / "engines"


def runtime_options(cfg: PastaConfig, cache_dir: Path):
    """The export/runtime options of ``cfg`` for graphs cached in ``cache_dir``."""
    from pasta_ros.export.runtime import RuntimeOptions

    return RuntimeOptions(cfg.backend, Path(cache_dir), cfg.device, cfg.precision,
                          cfg.engine_rebuild, configure_threads(cfg.threads),
                          cfg.ort_precision)


def build_extractor(cfg: PastaConfig, *, cache_dir: str | Path | None = None,
                    backbone=None, weights_hash: str | None = None) -> FeatureExtractor:
    """The feature extractor of ``cfg`` (calibration and inference alike): the registry
    backbone in torch, or, for ``backend`` onnxruntime/tensorrt, its exported graph cached in
    ``cache_dir`` (``cfg.engine_dir``, else :func:`default_cache_dir`). Sets the process's
    threads (:mod:`pasta_ros.core.threads`). With ``ort_precision int8`` the first baseline
    images it runs on are kept to calibrate the int8 graph (see :func:`prepare_runtime`).
    ``weights_hash``: the weights' fingerprint when the caller has it (saves a second read of
    the weight files)."""
    configure_threads(cfg.threads)
    backbone = backbone or build_backbone(cfg.backbone, cfg.weights)
    if cfg.backend != "torch":
        from pasta_ros.export.runtime import ExportedBackbone

        cache = Path(cfg.engine_dir) if cfg.engine_dir else Path(cache_dir or
                                                                 default_cache_dir())
        backbone = ExportedBackbone(backbone, runtime_options(cfg, cache), weights_hash or
                                    weights_fingerprint(cfg.backbone, cfg.weights))
        if cfg.ort_precision == "int8":
            backbone.collect_inputs(QUANT_IMAGES)
    return FeatureExtractor(backbone, (cfg.input_width, cfg.input_height),
                            resolve_device(cfg.device), cfg.color_weight)


def check_channels(model: CalibratedModel, extractor: FeatureExtractor) -> None:
    """Raise ModelError when the model's centres are not as wide as the extractor's
    features."""
    if extractor.channels != model.channels:
        raise ModelError(f"the model has {model.channels}-dim centres but backbone "
                         f"{extractor.info.name} (colour weight {extractor.color_weight}) "
                         f"gives {extractor.channels} channels")


def uses_fused_graph(cfg: PastaConfig, model: CalibratedModel) -> bool:
    """Whether frames of ``model`` run on the fused pixels -> cluster-map graph: an exported
    backend with ``fused_graph`` on, a method that needs only the cluster map, and not an int8
    backbone (int8 exists for the feature graph only), and no empty-scene instance bank (it
    needs the patch features)."""
    int8 = cfg.backend == "onnxruntime" and cfg.ort_precision == "int8"
    return (cfg.backend != "torch" and cfg.fused_graph and model.method in FUSABLE and not int8
            and model.distractor_bank is None)


def icas_pipeline_config(cfg: PastaConfig, icas_on: bool, share: bool) -> PastaConfig:
    """The config to load a pipeline with for an iCAS vote (node, ``pasta evaluate --icas``,
    ``pasta bench icas_share``): with the vote on and sharing PASTA's backbone, frames run on
    the feature graph, not the fused one: no features leave the fused graph, so the vote
    would need an encoder pass of its own."""
    return cfg.replace(fused_graph=False) if icas_on and share else cfg


def prepare_runtime(component, input_size: tuple[int, int], stride: int) -> None:
    """Export/check/build (or reuse) the graph an exported backbone or fused graph needs for
    camera frames of ``input_size = (W, H)``, so the first frame pays nothing; a no-op for
    torch. Frames of another aspect get their own graph on first use."""
    if hasattr(component, "prepare"):
        w, h = input_size
        component.prepare(network_size(w, h, w, h, stride))


def build_fused_graph(model: CalibratedModel, backbone, cfg: PastaConfig, cache: Path):
    """The fused pixels -> cluster-map graph of ``model`` on the torch ``backbone``, exported
    (or reused from ``cache``) and parity-checked for the model's input size now."""
    from pasta_ros.export.runtime import ExportedClusterMap

    graph = ExportedClusterMap(model, backbone, runtime_options(cfg, cache))
    prepare_runtime(graph, model.input_size, backbone.info.stride)
    return graph


class PastaPipeline:
    """A calibrated model with its backbone and segmenter, ready for frames."""

    def __init__(self, model: CalibratedModel, extractor: FeatureExtractor,
                 segmenter: Segmenter, vote_threshold: float,
                 cluster_map_fn: Callable[[Sequence[np.ndarray]], torch.Tensor] | None = None,
                 point_segmenter: PointSegmenter | None = None) -> None:
        check_channels(model, extractor)
        self.model = model
        self.extractor = extractor
        self.segmenter = segmenter
        self.vote_threshold = vote_threshold
        self.cluster_map_fn = cluster_map_fn  # fused exported graph: pixels -> cluster ids
        self.centers = torch.from_numpy(model.centers).to(extractor.device)
        self.anomaly_lut = torch.from_numpy(model.anomaly).to(extractor.device)
        # a "waw" model votes per object (core/waw_method.py), not per patch
        self.point_segmenter = point_segmenter
        self.waw = (WawObjects.from_model(model, extractor, segmenter, point_segmenter)
                    if model.method == "waw" else None)
        self.object_vote = (ObjectVote.from_model(model) if model.method == "pasta_object"
                            else None)

    @classmethod
    def load(cls, model_dir: str | Path, cfg: PastaConfig | None = None, *,
             explicit: set[str] | None = None, extractor: FeatureExtractor | None = None,
             ) -> PastaPipeline:
        """Load a model directory and build its backbone (``cfg.weights``) and segmenter."""
        model = load_model(model_dir)
        cfg = cfg or PastaConfig()
        check_model_matches(model, cfg, explicit or set())
        fingerprint = weights_fingerprint(model.backbone, cfg.weights)
        if model.weights_hash and fingerprint != model.weights_hash:
            raise ModelError(f"the model was calibrated with {model.backbone} weights "
                             f"{model.weights_hash} but the given weights hash to {fingerprint}")
        cluster_map_fn = None
        if extractor is None:
            cache = Path(cfg.engine_dir) if cfg.engine_dir else Path(model_dir) / "engines"
            backbone = build_backbone(model.backbone, cfg.weights)
            if uses_fused_graph(cfg, model):
                extractor = FeatureExtractor(backbone, model.input_size,
                                             resolve_device(cfg.device), model.color_weight)
                check_channels(model, extractor)  # before an export with unfit centres
                cluster_map_fn = build_fused_graph(model, backbone, cfg, cache)
            else:
                mcfg = cfg.replace(input_width=model.input_size[0],
                                   input_height=model.input_size[1],
                                   color_weight=model.color_weight, backbone=model.backbone)
                extractor = build_extractor(mcfg, cache_dir=cache, backbone=backbone,
                                            weights_hash=fingerprint)
        prepare_runtime(extractor.backbone, model.input_size, extractor.info.stride)
        vote = cfg.vote_threshold if explicit and "vote_threshold" in explicit \
            else model.vote_threshold
        return cls.assemble(model, extractor, cfg, vote, cluster_map_fn)

    @classmethod
    def assemble(cls, model: CalibratedModel, extractor: FeatureExtractor, cfg: PastaConfig,
                 vote_threshold: float,
                 cluster_map_fn: Callable[[Sequence[np.ndarray]], torch.Tensor] | None = None,
                 ) -> PastaPipeline:
        """A pipeline for ``model`` on ``extractor`` with the segmenters ``cfg`` names: the
        instance segmenter, and for a WaW ExG model the point segmenter it was calibrated
        with (its recorded ``waw_point_segmenter``; the checkpoint from ``cfg``)."""
        params = model.method_params or {}
        point_segmenter = None
        if model.method == "waw" and params.get("waw_masks") == "exg":
            point_segmenter = build_point_segmenter(  # at the calibration's min_area
                params.get("waw_point_segmenter", "watershed"),
                cfg.replace(min_area=params["min_area"]))
        return cls(model, extractor, build_segmenter(cfg.segmenter, model, cfg),
                   vote_threshold, cluster_map_fn, point_segmenter)

    @property
    def backend(self) -> str:
        """The backend frames run on, in words: ``torch``, ``onnxruntime fp32``,
        ``onnxruntime int8``, ``tensorrt fp16``, with `` (fused graph)`` for the fused graph."""
        runtime = self.cluster_map_fn if self.cluster_map_fn is not None \
            else self.extractor.backbone
        opts = getattr(runtime, "opts", None)
        if opts is None:
            return "torch"
        precision = opts.ort_precision if opts.backend == "onnxruntime" else opts.precision
        fused = " (fused graph)" if self.cluster_map_fn is not None else ""
        return f"{opts.backend} {precision}{fused}"

    def with_runtime_config(self, cfg: PastaConfig, changed: set[str]) -> PastaPipeline:
        """This pipeline (same model and backend) with the run-time settings of ``cfg`` named
        in ``changed``: ``vote_threshold``; a field of the segmenters' ``RUNTIME_FIELDS``
        (``min_area``, ``seed_depth``, ``split_edges``, ``split_edges_colour``,
        ``split_necks``, ``rim_prior``: a new segmenter)."""
        segmenter = build_segmenter(cfg.segmenter, self.model, cfg) \
            if changed & RUNTIME_FIELDS else self.segmenter
        vote = cfg.vote_threshold if "vote_threshold" in changed else self.vote_threshold
        return PastaPipeline(self.model, self.extractor, segmenter, vote, self.cluster_map_fn,
                             self.point_segmenter)

    @torch.inference_mode()
    def process(self, image: np.ndarray, *, with_instances: bool = True,
                icas: IcasVote | None = None) -> FrameResult:
        """``(H, W, 3) uint8`` RGB -> FrameResult (labels and instances at H x W).

        icas: an iCAS vote (:mod:`pasta_ros.core.icas.vote`) that replaces or joins the anomaly
        clusters in marking anomalous patches; None, or no prompt set on it: PASTA alone.
        """
        t = [time.perf_counter()]
        prepared = self.extractor.prepare(image)
        t.append(time.perf_counter())
        if self.waw is not None:
            return self._process_waw(image, prepared, t, with_instances)
        feats = raw = None
        if self.cluster_map_fn is not None:  # one graph: backbone + assignment
            cluster_map = self.cluster_map_fn([prepared])[0].to(self.centers.device)
            t.append(time.perf_counter())
        else:
            if self._icas_shares(icas):  # one backbone pass for PASTA and the iCAS vote
                feats, raw = self.extractor.features_and_raw([prepared])
            else:
                feats = self.extractor.features([prepared])
            t.append(time.perf_counter())
            cluster_map = assign_clusters(feats, self.centers)[0]
        anomaly = self._anomaly_patches(cluster_map)
        t.append(time.perf_counter())
        vote, t_icas = "pasta", 0.0
        if icas is not None:
            t0 = time.perf_counter()
            extra = icas.patch_map(image, tuple(anomaly.shape), anomaly.device, feats=raw)
            if extra is not None:
                anomaly = icas.merge(anomaly, extra)
                vote = "icas" if icas.mode == "replace" else "pasta+icas"
            t_icas = (time.perf_counter() - t0) * 1e3
        ids = self.segmenter.segment(prepared, cluster_map)
        if self.model.distractor_bank is not None and feats is not None:
            ids = drop_distractors(ids, unit_features(feats[0]), self.model.distractor_bank,
                                   self.model.distractor_threshold, anomaly.cpu().numpy(),
                                   self.vote_threshold)
        votes = anomaly
        if self.object_vote is not None:
            votes, vote = self._object_vote(prepared, feats, ids, anomaly), vote + "+object"
        h, w = image.shape[:2]
        if ids.shape != (h, w):
            ids = cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)
        t.append(time.perf_counter())
        fused = fuse(ids, votes, self.vote_threshold, with_instances=with_instances)
        t.append(time.perf_counter())
        stages = ("preprocess", "backbone", "assign", "segment", "fusion")
        timings = {s: (b - a) * 1e3 for s, a, b in zip(stages, t, t[1:])}
        if icas is not None:  # the iCAS time sits inside 'segment': report it on its own
            timings["segment"] -= t_icas
            timings["icas"] = t_icas
        timings["total"] = (t[-1] - t[0]) * 1e3
        return FrameResult(fused.labels, fused.instances, cluster_map.cpu().numpy(),
                           anomaly.cpu().numpy(), self.model.model_id, timings, vote)

    def _icas_shares(self, icas: IcasVote | None) -> bool:
        """Whether the iCAS vote can score on this frame's backbone features: its encoder
        is this backbone with the same weights and encodes at this model's input size (see
        :meth:`share_icas_backbone`); never with the fused graph (no features leave it)."""
        return (icas is not None and self.cluster_map_fn is None
                and icas.shares_features(self.extractor.backbone, self.extractor.max_size))

    def share_icas_backbone(self, predictor: ICASPredictor, max_cells: int = 0) -> bool:
        """Set ``predictor`` up to score on this pipeline's backbone features (one encoder
        pass per frame) when its encoder is the same backbone with the same weights: it then
        encodes prompts at this model's input size (prompts set before at another size are
        dropped); ``max_cells`` > 0: its decoder sees them pooled to at most that many cells
        (:meth:`ICASPredictor.share_backbone`). False, and the predictor unchanged, when it
        cannot share (another backbone or weights, or the fused graph). With an exported
        backbone the shared features are the graph's (fp32: parity-checked against torch;
        int8 / fp16 differ from the torch encoder's by their rounding)."""
        if self.cluster_map_fn is not None:
            return False
        return predictor.share_backbone(self.extractor.backbone, self.extractor.max_size,
                                        max_cells)

    def _anomaly_patches(self, cluster_map: torch.Tensor) -> torch.Tensor:
        """``(h, w) int64`` cluster ids -> ``(h, w) bool`` anomaly patches (the model's
        lookup table). On the CPU a numpy gather: a torch index op is one more parallel
        region, which costs milliseconds when other processes hold the cores."""
        if cluster_map.is_cuda:
            return self.anomaly_lut[cluster_map]
        return torch.from_numpy(self.model.anomaly[cluster_map.numpy()])

    def _object_vote(self, prepared: np.ndarray, feats: torch.Tensor | None, ids: np.ndarray,
                     anomaly: torch.Tensor) -> np.ndarray:
        """``pasta_object``: ``(H', W') bool`` pixel votes at the network size = the patch
        vote's pixels, and every pixel of an instance in an anomaly object cluster."""
        if feats is None:
            feats = self.extractor.features([prepared])
        flags = self.object_vote.anomalous(feats[0], ids)
        px = upsample_nearest(anomaly, *ids.shape).cpu().numpy()
        return px | flags[ids]

    def _process_waw(self, image: np.ndarray, prepared: np.ndarray, t: list[float],
                     with_instances: bool) -> FrameResult:
        """A ``waw`` model's frame: object masks -> embeddings -> feature vote per object;
        the anomaly patches (Evaluation A) are the patch cells mostly covered by anomalies."""
        ids, cmap = self.waw.instance_ids(prepared)
        t.append(time.perf_counter())
        anomalous, _ = self.waw.classify(self.waw.embed(prepared, ids))
        t.append(time.perf_counter())
        anomaly_px = np.concatenate([[False], anomalous])[ids]  # (H', W') bool
        h, w = image.shape[:2]
        full_ids = ids if ids.shape == (h, w) else cv2.resize(ids, (w, h),
                                                              interpolation=cv2.INTER_NEAREST)
        fused = fuse(full_ids, anomaly_px, 0.5, with_instances=with_instances)
        stride = self.extractor.info.stride
        grid = (max(1, prepared.shape[1] // stride), max(1, prepared.shape[0] // stride))
        patches = cv2.resize(anomaly_px.astype(np.float32), grid,
                             interpolation=cv2.INTER_AREA) >= 0.5
        cluster_map = (cmap.cpu().numpy() if cmap is not None
                       else np.zeros(patches.shape, np.int64))
        t.append(time.perf_counter())
        stages = ("preprocess", "segment", "embed_vote", "fusion")
        timings = {s: (b - a) * 1e3 for s, a, b in zip(stages, t, t[1:])}
        timings["total"] = (t[-1] - t[0]) * 1e3
        return FrameResult(fused.labels, fused.instances, cluster_map, patches,
                           self.model.model_id, timings, "waw")
