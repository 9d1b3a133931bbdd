"""One configuration schema shared by the CLI and the ROS node.

Every field carries a description and an allowed range in its metadata; the node declares its
ROS parameters from these, the CLI builds its options from them, and :func:`PastaConfig.validate`
is the one place where values are checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind; the message names the field."""


def _f(default: Any, description: str, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None) -> Any:
    meta = {"description": description, "lo": lo, "hi": hi, "choices": choices}
    return field(default=default, metadata=meta)


BACKBONE_CHOICES = (
    "efficientnet_lite0", "dinov2_vits14", "dinov3_vits16", "dinov3_convnext_tiny",
    "clip_vit_b16", "clip_vit_b32_laion2b", "bioclip",
)
SEGMENTER_CHOICES = ("clusters", "sam3")
PRECISION_CHOICES = ("fp32", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
BACKEND_CHOICES = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class PastaConfig:
    """Calibration and inference settings (PASTA §III-C/D defaults)."""

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
    split_clusters: bool = _f(True, "after K-Means, split each object cluster in two and keep "
                                    "the split where one half is absent from the reference set "
                                    "(R < ratio_threshold): anomalies that K-Means merged with "
                                    "targets get a cluster of their own")
    background_ratio: float = _f(0.5, "with an empty-scene set: a cluster is background when "
                                      "P_empty/P_base >= this", lo=0.0, hi=100.0)
    batch_size: int = _f(4, "images per backbone batch", lo=1, hi=256)
    kmeans_epochs: int = _f(3, "passes of MiniBatch K-Means over the cached baseline features",
                            lo=1, hi=100)
    device: str = _f("auto", "torch device: auto picks cuda when available",
                     choices=DEVICE_CHOICES)
    backend: str = _f("torch", "inference backend", choices=BACKEND_CHOICES)
    segmenter: str = _f("clusters", "instance segmenter: clusters (weight-free) or sam3 "
                                    "(text-prompted SAM 3 from sam3_weights)",
                        choices=SEGMENTER_CHOICES)
    sam3_weights: str = _f("", "SAM 3 checkpoint folder (Hugging Face snapshot of facebook/sam3: "
                               "config.json, model.safetensors, tokenizer files)")
    sam3_prompt: str = _f("objects on the conveyor belt", "SAM 3 text prompt (encoded once)")
    sam3_score_threshold: float = _f(0.5, "SAM 3: keep instances whose score exceeds this",
                                     lo=0.0, hi=1.0)
    sam3_nms_iou: float = _f(0.5, "SAM 3: masks overlapping a better one by more than this "
                                  "IoU are dropped", lo=0.0, hi=1.0)
    fused_graph: bool = _f(False, "onnxruntime/tensorrt: one exported graph from pixels to the "
                                  "cluster map (normalise, backbone, colour, nearest centre)")
    precision: str = _f("fp16", "TensorRT engine precision", choices=PRECISION_CHOICES)
    engine_dir: str = _f("", "folder for exported ONNX files and TensorRT engines "
                             "('' = <model dir>/engines)")
    engine_rebuild: bool = _f(True, "build a missing or stale TensorRT engine at start-up "
                                    "(False: fail and say why)")
    min_area: int = _f(150, "segments smaller than this many pixels (at input size) are dropped",
                       lo=0, hi=10**7)
    instance_split: bool = _f(True, "after the segmenter, split an instance that holds a "
                                    "coherent anomaly part and a coherent non-anomaly part "
                                    "(each >= min_area) along the material border, refined "
                                    "to pixels by a colour model; each part votes alone")
    split_separation: float = _f(4.0, "instance_split: minimum Mahalanobis distance between "
                                      "the two sides' Lab colour models for a split",
                                 lo=0.0, hi=100.0)

    def validate(self) -> PastaConfig:
        """Check every field against its metadata; raise ConfigError naming the first bad one."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            expected = type(f.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ConfigError(f"{f.name}: expected {expected.__name__}, got {value!r}")
            base = value.split(":")[0] if f.name == "backbone" else value  # layer suffix
            if meta.get("choices") and base not in meta["choices"]:
                allowed = ", ".join(meta["choices"])
                raise ConfigError(f"{f.name}: {value!r} is not one of {allowed}")
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is not None and value < lo or hi is not None and value > hi:
                raise ConfigError(f"{f.name}: {value!r} is outside [{lo}, {hi}]")
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
