"""The node's ROS parameters: declared from one table, validated in one place.

Two kinds of parameter, both in ``config/sorter.yaml``:

- every field of :class:`~pasta_ros.core.config.PastaConfig` (the schema the CLI uses), with the
  description and range from its metadata;
- node-only settings (:data:`NODE_PARAMS`): model and topic locations, QoS, overlay, diagnostics.

:func:`settings_from_values` is the single validator: it builds a :class:`NodeSettings` (config +
node settings) or raises :class:`~pasta_ros.core.config.ConfigError` naming the parameter and the
allowed range or choices. Startup and ``set_parameters`` both go through it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pasta_ros.core.config import ConfigError, PastaConfig, field_specs
from pasta_ros.core.errors import ModelError
from pasta_ros.core.model_store import check_name
from pasta_ros.core.options import Option, OptionError
from pasta_ros.core.segmenters.registry import RUNTIME_FIELDS


@dataclass(frozen=True)
class ParamSpec(Option):
    """One node-only parameter: an :class:`Option` that may also change at run time."""

    dynamic: bool = False


# the node's outputs (pasta/<name>) and their default history depth; each gets
# <name>_qos_depth and <name>_qos_reliability parameters
OUTPUTS = {"segmentation": 5, "anomaly_masks": 5, "overlay": 2, "camera_info": 5}

NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model_dir", "", "calibrated model directory (`pasta calibrate --out`) the node "
              "starts with; '' = the latest model of this node's lineage under models_root. "
              "An explicit model_dir wins over the lineage's latest unless follow_latest"),
    ParamSpec("models_root", "", "model store: recalibrated and selected models are kept in "
              "<models_root>/<lineage>/<model id>/ with a <lineage>/latest pointer; '' = the "
              "parent folder of model_dir"),
    ParamSpec("lineage", "", "this node's line in the model store (letters, digits, '.', '_', "
              "'-'); '' = the node's fully qualified name with '/' as '.' (/line_a/pasta_node "
              "-> line_a.pasta_node). A node never loads another lineage's models"),
    ParamSpec("follow_latest", False, "start with the lineage's latest model (the last "
              "recalibration or selection) even when model_dir is given; false = model_dir "
              "wins, and a newer latest is only named in the log"),
    ParamSpec("feature_cache_dir", "", "folder for the on-disk feature cache of a "
              "recalibration (removed afterwards; leftovers of a crashed run are removed at "
              "start); '' = <models_root>/<lineage>/.cache"),
    ParamSpec("image_topic", "image", "input image topic (relative names follow the namespace "
              "and remaps; the launch file remaps 'image')"),
    ParamSpec("input_type", "raw", "message type on image_topic: raw = sensor_msgs/Image, "
              "compressed = sensor_msgs/CompressedImage", choices=("raw", "compressed")),
    ParamSpec("qos_depth", 1, "history depth of the input subscription (the node always works "
              "on the newest frame, so 1 is enough)", lo=1, hi=100),
    ParamSpec("qos_reliability", "best_effort", "reliability of the input subscription "
              "(best_effort also accepts reliable publishers)",
              choices=("best_effort", "reliable")),
    ParamSpec("publish_overlay", True, "publish /pasta/overlay (rgb8 image with the 3-class "
              "mask blended in)", dynamic=True),
    ParamSpec("camera_info_topic", "", "optional sensor_msgs/CameraInfo topic of the camera; when "
              "set, the CameraInfo nearest in time to each processed frame is republished on "
              "pasta/camera_info with the label image's header ('' = off)"),
    ParamSpec("camera_info_slop", 0.05, "largest stamp difference in seconds between a frame and "
              "the CameraInfo paired with it", lo=0.0, hi=10.0),
    ParamSpec("max_contour_vertices", 32, "most points of each instance's simplified contour "
              "in pasta_msgs/Instance.contour (0 = no contour)", lo=0, hi=4096, dynamic=True),
    ParamSpec("serialized_outputs", True, "publish the label image and the InstanceArray "
              "as serialized bytes written by pasta_ros/ros/cdr.py (2-3x cheaper than rclpy "
              "message objects; checked against rclpy at activation, message objects if the "
              "check fails); false = always message objects. Read at activation"),
    ParamSpec("input_timeout_s", 2.0, "diagnostics: WARN when no camera frame came for this "
              "long, ERROR after 5 times as long", lo=0.05, hi=3600.0, dynamic=True),
    ParamSpec("diag_latency_warn_ms", 0.0, "diagnostics: WARN when the latency p95 (receive "
              "-> publish) exceeds this (0 = off)", lo=0.0, hi=1e6, dynamic=True),
    ParamSpec("diag_latency_error_ms", 0.0, "diagnostics: ERROR when the latency p95 exceeds "
              "this (0 = off)", lo=0.0, hi=1e6, dynamic=True),
    ParamSpec("diag_min_rate_hz", 0.0, "diagnostics: WARN when frames come but outputs go out "
              "at less than this rate (0 = off)", lo=0.0, hi=1000.0, dynamic=True),
    ParamSpec("diag_drop_share_warn", 1.0, "diagnostics: WARN when more than this share of "
              "the period's frames was dropped (the node works on the newest frame, so a camera "
              "faster than inference drops by design; 1.0 = off)", lo=0.0, hi=1.0,
              dynamic=True),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages",
              lo=0.05, hi=60.0),
    ParamSpec("icas_mode", "off", "iCAS (in-context anomaly segmentation from prompts set with "
              "/pasta/set_prompts) as the anomaly vote: off = PASTA's anomaly clusters only; "
              "replace = the patches iCAS scores >= icas_threshold instead of the clusters; "
              "combine = either. Until a prompt is set, the vote is PASTA's alone.",
              choices=("off", "replace", "combine"), dynamic=True),
    ParamSpec("icas_checkpoint", "", "iCAS checkpoint file; '' = the shipped "
              "models/icas/icas_lite0.pt. Loaded at start when icas_mode is not off, else at "
              "the first /pasta/set_prompts call"),
    ParamSpec("icas_weights", "", "encoder weights for an iCAS checkpoint whose backbone needs "
              "them (a Hugging Face snapshot folder or a state-dict file); '' = none needed"),
    ParamSpec("icas_share_backbone", True, "when the iCAS encoder is the model's backbone "
              "with the same weights, score the vote on PASTA's backbone features of the frame "
              "(one encoder pass; prompts are encoded at the model's input size) instead of a "
              "second pass at the checkpoint's 224x224. Read when the iCAS model loads"),
    ParamSpec("icas_max_cells", 1200, "with icas_share_backbone: the shared features are "
              "average-pooled by the smallest factor that leaves at most this many cells "
              "before the iCAS decoder (its cost grows with the cells; 0 = PASTA's full grid). "
              "Read when the iCAS model loads", lo=0, hi=10**6),
    ParamSpec("icas_decoder_backend", "onnxruntime", "with icas_share_backbone on the CPU: "
              "onnxruntime = the iCAS decoder's ONNX Runtime graph scores frames (exported and "
              "parity-checked when prompts are set; ~2x torch), torch = the torch decoder. "
              "Read when the iCAS model loads", choices=("onnxruntime", "torch")),
    ParamSpec("icas_threshold", 0.5, "iCAS score from which a patch counts as anomalous",
              lo=0.001, hi=1.0, dynamic=True),
    ParamSpec("icas_max_prompt_images", 8, "frames taken from a prompt bag when the "
              "/pasta/set_prompts request gives no max_images", lo=1, hi=256, dynamic=True),
    *(spec for name, depth in OUTPUTS.items() for spec in (
        ParamSpec(f"{name}_qos_depth", depth, f"history depth of the pasta/{name} publisher",
                  lo=1, hi=1000),
        ParamSpec(f"{name}_qos_reliability", "reliable", f"reliability of the pasta/{name} "
                  "publisher (best_effort never blocks on a slow subscriber; reliable also "
                  "serves best_effort subscribers)", choices=("reliable", "best_effort")))),
    ParamSpec("min_recalibration_frames", 4, "a recalibration bag (baseline, reference) must "
              "hold at least this many frames on the image topic", lo=1, hi=1_000_000,
              dynamic=True),
)

# Config fields that take effect without a restart: vote_threshold and the segmenter's
# RUNTIME_FIELDS (min_area, seed_depth, split_edges, split_edges_colour, split_necks,
# rim_prior) rebuild the running pipeline's segmenter and vote; the calibration settings
# apply at the next /pasta/recalibrate. The rest (backbone, input size, device...) need a
# restart.
RUNTIME_CONFIG = frozenset({"vote_threshold"}) | RUNTIME_FIELDS
DYNAMIC_CONFIG = RUNTIME_CONFIG | frozenset({
    "clusters", "seed", "ratio_threshold", "background_ratio", "batch_size", "kmeans_epochs",
    "object_codebook", "split_clusters", "split_parts", "border_depth", "max_image_pixels"})


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameters: the shared config plus the node-only values by name."""

    config: PastaConfig
    node: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.node[name]
        except KeyError:
            raise AttributeError(name) from None

    def explicit_fields(self) -> set[str]:
        """Config fields whose value differs from the schema default (treated as the user's
        explicit choice when checking a model against the config)."""
        default = PastaConfig()
        return {f.name for f in dataclasses.fields(PastaConfig)
                if getattr(self.config, f.name) != getattr(default, f.name)}

    def pipeline_config(self) -> PastaConfig:
        """The config models are loaded with: the shared config, except that with the iCAS
        vote on and sharing PASTA's backbone (``icas_share_backbone``) frames run on the
        feature graph, not the fused one: no features leave the fused graph, so the vote
        would need an encoder pass of its own."""
        from pasta_ros.pipeline import icas_pipeline_config

        return icas_pipeline_config(self.config, self.node["icas_mode"] != "off",
                                    self.node["icas_share_backbone"])


@dataclass(frozen=True)
class Declared:
    """What :func:`declarations` yields per parameter."""

    name: str
    default: Any
    description: str
    lo: float | None
    hi: float | None
    choices: tuple[str, ...] | None
    read_only: bool


def declarations() -> list[Declared]:
    """Every parameter the node declares, config fields first."""
    out = [Declared(f.name, f.default, f.metadata["description"], f.metadata.get("lo"),
                    f.metadata.get("hi"), f.metadata.get("choices"),
                    f.name not in DYNAMIC_CONFIG) for f in field_specs()]
    out += [Declared(p.name, p.default, p.description, p.lo, p.hi, p.choices, not p.dynamic)
            for p in NODE_PARAMS]
    return out


def _check_node_value(spec: ParamSpec, value: Any) -> Any:
    try:
        return spec.check(value)
    except OptionError as exc:
        raise ConfigError(str(exc)) from None


def settings_from_values(values: dict[str, Any]) -> NodeSettings:
    """Validate a full or partial mapping of parameter values (missing ones take defaults).

    Raises:
        ConfigError: unknown name, wrong type, out of range or not an allowed choice; the
            message starts with the parameter's name.
    """
    config_names = {f.name for f in field_specs()}
    specs = {p.name: p for p in NODE_PARAMS}
    unknown = sorted(set(values) - config_names - set(specs))
    if unknown:
        raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
    config = PastaConfig.from_dict({k: v for k, v in values.items() if k in config_names})
    node = {name: _check_node_value(spec, values.get(name, spec.default))
            for name, spec in specs.items()}
    if not node["model_dir"] and not node["models_root"]:
        raise ConfigError("model_dir: give a calibrated model directory (or models_root holding "
                          "a recalibrated model)")
    if node["lineage"]:
        try:
            check_name("lineage", node["lineage"])
        except ModelError as exc:
            raise ConfigError(str(exc)) from None
    return NodeSettings(config, node)


def as_values(settings: NodeSettings) -> dict[str, Any]:
    """Inverse of :func:`settings_from_values`: every parameter name -> value."""
    return settings.config.to_dict() | dict(settings.node)


def apply_changes(current: NodeSettings, changes: dict[str, Any]) -> NodeSettings:
    """``current`` with ``changes`` applied, validated (ConfigError naming the parameter)."""
    return settings_from_values(as_values(current) | changes)


# --------------------------------------------------------------------------- rclpy side


def descriptor(d: Declared):
    """The ``rcl_interfaces/ParameterDescriptor`` of one declaration (ranges, choices)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(description=d.description, read_only=d.read_only)
    if isinstance(d.default, bool):
        pass
    elif isinstance(d.default, int) and d.lo is not None and d.hi is not None:
        desc.integer_range = [IntegerRange(from_value=int(d.lo), to_value=int(d.hi), step=1)]
    elif isinstance(d.default, float) and d.lo is not None and d.hi is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(d.lo),
                                                        to_value=float(d.hi), step=0.0)]
    if d.choices:
        desc.additional_constraints = f"one of: {', '.join(d.choices)}"
    elif d.lo is not None or d.hi is not None:
        desc.additional_constraints = f"in [{d.lo}, {d.hi}]"
    return desc


def declare_all(node) -> NodeSettings:
    """Declare every parameter on ``node`` (an rclpy Node) and return the validated settings.

    Raises:
        ConfigError: a value given at startup (params file, ``-p``) is of the wrong type, out
            of range, not an allowed choice, or names no parameter of this node.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    decls = declarations()
    for d in decls:
        try:
            node.declare_parameter(d.name, d.default, descriptor(d))
        except InvalidParameterTypeException as exc:
            kind = type(d.default).__name__
            raise ConfigError(f"{d.name}: expected a {kind} ({exc})") from None
        except InvalidParameterValueException as exc:
            raise ConfigError(f"{d.name}: {exc}") from None
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them privately
    known = {d.name for d in decls} | {"use_sim_time", "start_type_description_service"}
    stray = sorted(n for n in overrides if n not in known and not n.startswith("qos_overrides."))
    if stray:
        raise ConfigError(f"unknown parameter(s) given to the node: {', '.join(stray)}")
    return settings_from_values({d.name: node.get_parameter(d.name).value for d in decls})
