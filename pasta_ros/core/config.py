"""One configuration schema shared by the CLI and the ROS node.

Every field carries a description and an allowed range in its metadata; the node declares its
ROS parameters from these, the CLI builds its options from them, and :func:`PastaConfig.validate`
is the one place where values are checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pasta_ros.core.backbones import list_backbones
from pasta_ros.core.errors import PastaError
from pasta_ros.core.methods import METHODS
from pasta_ros.core.options import Option, OptionError
from pasta_ros.core.segmenters.registry import SEGMENTERS


class ConfigError(PastaError, ValueError):
    """A configuration value is out of range or of the wrong kind; the message names the field."""


def _f(default: Any, description: str, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None) -> Any:
    meta = {"description": description, "lo": lo, "hi": hi, "choices": choices}
    return field(default=default, metadata=meta)


BACKBONE_CHOICES = tuple(list_backbones())
SEGMENTER_CHOICES = tuple(SEGMENTERS)
METHOD_CHOICES = tuple(METHODS)
PRECISION_CHOICES = ("fp32", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
BACKEND_CHOICES = ("torch", "onnxruntime", "tensorrt")
ORT_PRECISION_CHOICES = ("fp32", "int8")


@dataclass(frozen=True)
class _SharedConfig:
    """The fields every method and segmenter shares; :class:`PastaConfig` adds the options of
    the registered plug-ins."""

    method: str = _f("pasta", "calibration method (registry name)", choices=METHOD_CHOICES)

    backbone: str = _f("efficientnet_lite0", "feature backbone (registry name)",
                       choices=BACKBONE_CHOICES)
    weights: str = _f("", "local checkpoint: HF snapshot folder or state-dict file; '' = the "
                          "backbone's bundled weights (efficientnet_lite0 only)")
    input_width: int = _f(910, "network input width in pixels before rounding to the stride",
                          lo=16, hi=8192)
    input_height: int = _f(512, "network input height in pixels before rounding to the stride",
                           lo=16, hi=8192)
    clusters: int = _f(20, "K of MiniBatch K-Means", lo=2, hi=1024)
    seed: int = _f(0, "random seed for K-Means and sampling", lo=0, hi=2**31 - 1)
    ratio_threshold: float = _f(0.05, "a cluster is an anomaly when P_ref/P_base < this",
                                lo=0.0, hi=1.0)
    vote_threshold: float = _f(0.1, "a segment is an anomaly when its anomaly-patch share > this",
                               lo=0.0, hi=1.0)
    color_weight: float = _f(2.0, "weight of a per-patch opponent-colour descriptor appended to "
                                  "the L2-normalised backbone features (0 = backbone only)",
                             lo=0.0, hi=100.0)
    object_codebook: bool = _f(True, "spend the K clusters on object patches: background "
                                     "clusters of a first scene-level K-Means are kept and a "
                                     "second K-Means with K clusters runs on the remaining "
                                     "patches (False = the paper's single K-Means)")
    border_depth: int = _f(3, "without an empty set: the border prior also tests the rings of "
                              "patches 1 .. border_depth deep from the frame edge (the outer "
                              "rings' features carry the backbone's zero padding; 0 = the "
                              "outer ring only)", lo=0, hi=16)
    split_clusters: bool = _f(True, "after K-Means, split each object cluster in two and keep "
                                    "the split where one half is absent from the reference set "
                                    "(R < ratio_threshold): anomalies that K-Means merged with "
                                    "targets get a cluster of their own")
    split_parts: int = _f(4, "parts each split cluster is cut into by its K-Means "
                                 "(split_clusters); more than 2 separate an anomaly from a "
                                 "distractor the reference also shows", lo=2, hi=8)
    distractor_rule: bool = _f(False, "experimental, off: lost anomalies on a held-out dense "
                                      "belt (BENCHMARKS.md, issue 9). What the anomaly-free "
                                      "sets show is never an anomaly: each anomaly cluster is "
                                      "cut into 4 parts by K-Means and a part present in the "
                                      "reference or empty set (its P/P_base >= "
                                      "ratio_threshold) leaves the anomalies (background when "
                                     "P_empty/P_base >= background_ratio); with an empty set a "
                                     "cluster also needs P_empty/P_base < ratio_threshold to be "
                                     "an anomaly (distractors such as paper labels)")
    distractor_bank: bool = _f(False, "experimental, off: no version has passed its "
                                      "held-out rule yet (BENCHMARKS.md, issue 9, sessions "
                                      "10-11). With an empty-scene set, every instance the "
                                      "segmenter finds in an empty scene is a distractor "
                                      "(label, dirt); entries claiming more of the baseline "
                                      "than of the other empty scenes are dropped, and a "
                                      "frame's instance that looks like a kept one (mean patch "
                                      "feature, cosine, threshold from the bank itself) is "
                                      "background unless the vote calls it an anomaly. "
                                      "Frames then run on the feature graph, not the fused one")
    background_ratio: float = _f(0.5, "with an empty-scene set: a cluster is background when "
                                      "P_empty/P_base >= this", lo=0.0, hi=100.0)
    batch_size: int = _f(4, "images per backbone batch", lo=1, hi=256)
    kmeans_epochs: int = _f(3, "passes of MiniBatch K-Means over the cached baseline features "
                               "(fewer, at least one, beyond 6M patches in all)", lo=1, hi=100)
    device: str = _f("auto", "torch device: auto picks cuda when available",
                     choices=DEVICE_CHOICES)
    backend: str = _f("onnxruntime", "inference backend for the backbone: onnxruntime (default; "
                                     "exported and parity-checked once per model, cached "
                                     "beside it), torch (eager) or tensorrt (GPU)",
                      choices=BACKEND_CHOICES)
    ort_precision: str = _f("fp32", "onnxruntime backbone precision: fp32, or int8 (static "
                                    "quantization calibrated on the baseline images; built "
                                    "at calibration)", choices=ORT_PRECISION_CHOICES)
    threads: int = _f(0, "intra-op threads for torch, ONNX Runtime, numba and OpenCV, set once "
                         "per process (0 = $PASTA_THREADS, else all cores)", lo=0, hi=1024)
    segmenter: str = _f("clusters", "instance segmenter: " + "; ".join(
        f"{name} = {entry.description}" for name, entry in SEGMENTERS.items()),
        choices=SEGMENTER_CHOICES)
    fused_graph: bool = _f(True, "onnxruntime/tensorrt: one exported graph from pixels to the "
                                 "cluster map (normalise, backbone, colour, nearest centre); "
                                 "methods that need the features (pasta_object, waw) run the "
                                 "feature graph")
    precision: str = _f("fp16", "TensorRT engine precision", choices=PRECISION_CHOICES)
    engine_dir: str = _f("", "folder for exported ONNX files and TensorRT engines "
                             "('' = <model dir>/engines)")
    engine_rebuild: bool = _f(True, "rebuild a stale TensorRT engine or cached ONNX file at "
                                    "start-up (False: fail and say why)")
    min_area: int = _f(150, "segments smaller than this many pixels (at input size) are dropped",
                       lo=0, hi=10**7)
    seed_depth: float = _f(0.0, "clusters segmenter, touching objects: a distance-transform "
                                "maximum seeds its own instance when the saddle to any higher "
                                "maximum is at most (1 - seed_depth) x its height (relative "
                                "depth, h-maxima of log distance); 0 = seeds are the cores "
                                ">= 0.5 x the component's largest distance (the old rule); "
                                "used when split_edges is 0",
                           lo=0.0, hi=0.99)
    split_edges: float = _f(240.0, "clusters segmenter, touching objects: Canny high threshold "
                                 "(low = high / 3, on the 3x3-blurred image: split_edges_colour) "
                                 "of the edges "
                                 "that cut a blob into seeds; the seeds are flooded over the "
                                 "image gradient, so pieces that meet along a visible line split "
                                 "there (replaces the distance seeds); 0 = off (distance "
                                 "cores, seed_depth)",
                            lo=0.0, hi=1000.0)
    split_edges_colour: bool = _f(True, "split_edges: find the edges on the colour image "
                                        "(each pixel's strongest channel gradient, so copper "
                                        "meeting brass of one brightness still shows an edge); "
                                        "false = on the gray image")
    split_necks: bool = _f(False, "split_edges: split each part again where the distance "
                                  "transform shows a neck (cores >= 0.5 x the part's largest "
                                  "distance), so pieces that show an edge or a neck come "
                                  "apart; off: on the dev presets it raised pq_target but "
                                  "lowered pq_anomaly (BENCHMARKS.md, issue 9 session 13)")
    rim_prior: float = _f(0.0, "clusters segmenter: patch log-odds of an object patch "
                               "with a background patch among its 8 neighbours (the rim, "
                               "where shadows and belt fall inside object patches); 0 = the "
                               "pixel colour model alone decides there; 2.944 = every object "
                               "patch alike (logit 0.95, the segmenter before 2026-12-08)",
                          lo=-2.944, hi=2.944)
    instance_split: bool = _f(True, "after the segmenter, split an instance that holds a "
                                    "coherent anomaly part and a coherent non-anomaly part "
                                    "(each >= min_area) along the material border, refined "
                                    "to pixels by a colour model; each part votes alone")
    split_separation: float = _f(4.0, "instance_split: minimum Mahalanobis distance between "
                                      "the two sides' Lab colour models for a split",
                                 lo=0.0, hi=100.0)
    max_image_pixels: int = _f(50_000_000, "largest image or camera frame in pixels (width x "
                                           "height); a larger one is refused from its header "
                                           "before it is decoded (skipped and counted); "
                                           "0 = no limit", lo=0, hi=2**40)

    def validate(self) -> PastaConfig:
        """Check every field against its metadata; raise ConfigError naming the first bad one."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "backbone" and isinstance(value, str):
                value = value.split(":")[0]  # efficientnet_lite0:s8+s16 layer suffix
            option = Option(f.name, f.default, f.metadata["description"], f.metadata.get("lo"),
                            f.metadata.get("hi"), f.metadata.get("choices"))
            try:
                option.check(value)
            except OptionError as exc:
                raise ConfigError(str(exc)) from None
        return self

    def replace(self, **changes: Any) -> PastaConfig:
        """A validated copy with some fields changed (unknown names raise ConfigError)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        coerced = {k: float(v) if isinstance(getattr(self, k), float) and isinstance(v, int)
                   else v for k, v in changes.items()}
        return dataclasses.replace(self, **coerced).validate()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PastaConfig:
        """Build from a mapping (YAML ros__parameters, JSON manifest); validates."""
        return cls().replace(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plugin_options() -> list[Option]:
    """Every option of the registered methods and segmenters (their names must not clash with
    the shared fields or each other)."""
    options = [o for entry in (*METHODS.values(), *SEGMENTERS.values()) for o in entry.options]
    shared = {f.name for f in dataclasses.fields(_SharedConfig)}
    names = [o.name for o in options]
    clash = sorted({n for n in names if n in shared or names.count(n) > 1})
    if clash:
        raise RuntimeError(f"plug-in option name(s) defined twice: {', '.join(clash)}")
    return options


PastaConfig = dataclasses.make_dataclass(
    "PastaConfig",
    [(o.name, type(o.default), _f(o.default, o.description, lo=o.lo, hi=o.hi, choices=o.choices))
     for o in plugin_options()],
    bases=(_SharedConfig,), frozen=True)
PastaConfig.__module__ = __name__
PastaConfig.__doc__ = ("Calibration and inference settings (PASTA §III-C/D defaults): the shared "
                       "fields plus every registered plug-in's options.")


def field_specs() -> list[dataclasses.Field]:
    """The schema's fields, for CLI option and ROS parameter declaration."""
    return list(dataclasses.fields(PastaConfig))


def load_yaml_config(path: str) -> dict[str, Any]:
    """Read config values from YAML: the ROS params form (``/node: ros__parameters: {...}``,
    the first node's block) or a flat mapping. Unknown keys are left for the caller to reject
    (node-only parameters such as topics live beside the shared fields)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for value in data.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            data = value["ros__parameters"]
            break
    names = {f.name for f in dataclasses.fields(PastaConfig)}
    return {k: v for k, v in data.items() if k in names}
