"""Many cameras, one node each: the camera list file read by ``launch/cameras.launch.py``.

::

    cameras:
      - namespace: cell1            # topics, services, node: /cell1/pasta/...
        image_topic: /cell1/camera/image_raw
        model_dir: /models/line_a
        lineage: line_a             # optional (default: the namespace): recalibrated models
                                    # go to <models_base>/<lineage>, never shared with another
        camera_info_topic: /cell1/camera/camera_info   # optional
        parameters: {vote_threshold: 0.15}              # optional per-camera overrides
      - namespace: cell2
        ...
    models_base: /models/recalibrated   # optional; default: <list file folder>/models

No rclpy or launch here: the launch file and the tests call the same functions, so the tests
start each node with exactly the arguments the launch file gives it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pasta_ros.core.errors import PastaError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_KEYS = {"namespace", "image_topic", "model_dir", "lineage", "camera_info_topic", "parameters"}


@dataclass(frozen=True)
class CameraSpec:
    """One camera: its node's namespace, input topic, model and parameter overrides."""

    namespace: str
    image_topic: str
    model_dir: str
    models_root: str
    lineage: str
    camera_info_topic: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def node_parameters(self) -> dict[str, Any]:
        """The parameters this camera's node gets on top of the shared config file."""
        return {"model_dir": self.model_dir, "models_root": self.models_root,
                "lineage": self.lineage,
                "camera_info_topic": self.camera_info_topic, **self.parameters}

    def ros_arguments(self, config_file: str | Path) -> list[str]:
        """The ``--ros-args`` list launch_ros passes for this camera (node name, namespace,
        remap, the shared params file, then this camera's parameters)."""
        args = ["-r", "__node:=pasta_node", "-r", f"__ns:=/{self.namespace}",
                "-r", f"image:={self.image_topic}", "--params-file", str(config_file)]
        for k, v in self.node_parameters().items():  # values are read as YAML: JSON is YAML
            args += ["-p", f"{k}:={json.dumps(v)}"]
        return args


def _entry(raw: Any, i: int, path: Path, base: Path) -> CameraSpec:
    where = f"{path}: cameras[{i}]"
    if not isinstance(raw, dict):
        raise PastaError(f"{where}: expected a mapping with namespace, image_topic, model_dir")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise PastaError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(_KEYS))}")
    missing = [k for k in ("namespace", "image_topic", "model_dir") if not raw.get(k)]
    if missing:
        raise PastaError(f"{where}: give {', '.join(missing)}")
    ns = str(raw["namespace"]).strip("/")
    lineage = str(raw.get("lineage") or ns)
    for what, value in (("namespace", ns), ("lineage", lineage)):
        if not _NAME.match(value):
            raise PastaError(f"{where}: {what} {value!r} must be letters, digits and _ "
                             "(starting with a letter)")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise PastaError(f"{where}: parameters must be a mapping of parameter: value")
    return CameraSpec(ns, str(raw["image_topic"]), str(raw["model_dir"]), str(base), lineage,
                      str(raw.get("camera_info_topic") or ""), dict(params))


def load_cameras(path: str | Path) -> list[CameraSpec]:
    """The cameras of a list file; PastaError naming the entry and the fix for a bad one, for
    two cameras on one namespace or one lineage."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PastaError(f"cannot read the camera list {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) \
            or not data["cameras"]:
        raise PastaError(f"{path}: expected 'cameras:' with a list of at least one camera")
    base = Path(data.get("models_base") or path.resolve().parent / "models")
    cams = [_entry(raw, i, path, base) for i, raw in enumerate(data["cameras"])]
    for attr in ("namespace", "lineage"):
        values = [getattr(c, attr) for c in cams]
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise PastaError(f"{path}: two cameras share the {attr} {', '.join(dup)}; each "
                             "camera needs its own (set namespace / lineage)")
    return cams
