"""Cached exported graphs (ONNX fp32 / int8) and the JSON sidecar that says what each is.

A sidecar ``<file>.json`` records the artefact's key (what it was exported from: backbone and
weights fingerprint or model id, network input size, precision), the file's sha256 and the
parity report of the check run when it was built. A cached file is used only when its
sidecar exists, its key equals the one wanted and the file still hashes to the recorded
sha256; otherwise :func:`stale_reason` names why and :func:`ensure_artifact` rebuilds it or,
with rebuilding off, refuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pasta_ros.core.backends.base import BackendError

log = logging.getLogger("pasta.export")

SIDECAR_FORMAT = 1
# 2: TF-'same' paddings folded into the convs (static_pad); 1 (absent): dynamic Pad nodes
GRAPH_FORMAT = 2


@dataclass(frozen=True)
class ArtifactKey:
    """What one cached graph is valid for.

    kind: ``backbone`` | ``fused``; source: backbone name + weights fingerprint, or the model
    id for a fused graph (its centres are baked in); input_size: network ``(W, H)``;
    precision: ``fp32`` | ``int8``; graph: how the graph was exported (``GRAPH_FORMAT``; a file
    exported before a change in how graphs are built is stale, e.g. the dynamic-padding graphs
    of before :mod:`pasta_ros.export.static_pad`).
    """

    kind: str
    source: str
    input_size: tuple[int, int]
    precision: str = "fp32"
    graph: int = GRAPH_FORMAT

    def to_json(self) -> dict:
        return asdict(self) | {"input_size": list(self.input_size)}


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sidecar(artifact: Path, key: ArtifactKey, report: dict) -> Path:
    """Record ``key``, the file's sha256 and its parity ``report``; written atomically."""
    import onnxruntime
    import torch

    data = {"format": SIDECAR_FORMAT, "key": key.to_json(), "file": artifact.name,
            "sha256": file_sha256(artifact), "parity": report,
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}
    side = sidecar_path(artifact)
    tmp = _private(side)
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, side)
    return side


def _private(path: Path) -> Path:
    """A temporary name for ``path`` unique to this process and thread (same folder, same
    suffix), so processes sharing a cache never write one file at once; renamed into place."""
    return path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{path.suffix}")


def read_sidecar(artifact: Path) -> dict | None:
    try:
        return json.loads(sidecar_path(artifact).read_text())
    except (OSError, ValueError):
        return None


def stale_reason(artifact: Path, key: ArtifactKey) -> str | None:
    """None when ``artifact`` may be used for ``key``; else why not, in words."""
    if not artifact.is_file():
        return "no cached file"
    side = read_sidecar(artifact)
    if side is None:
        return "its sidecar is missing or unreadable"
    got = side.get("key") or {}
    for name, want in key.to_json().items():
        if got.get(name) != want:
            return f"it was built for {name} {got.get(name)!r}, not {want!r}"
    if side.get("sha256") != file_sha256(artifact):
        return "the file no longer matches its recorded sha256 (corrupt or replaced)"
    return None


def ensure_artifact(artifact: Path, key: ArtifactKey, build: Callable[[Path], dict], *,
                    rebuild: bool = True) -> dict:
    """Make sure ``artifact`` is a valid graph for ``key``; returns its sidecar.

    A missing file is always built. A stale one (wrong key, corrupt, no sidecar) is rebuilt
    with a warning naming the reason, or, with ``rebuild`` False, refused with BackendError.
    ``build(path)`` writes the file and returns its parity report (it raises when the check
    fails); nothing is left behind when it raises.
    """
    reason = stale_reason(artifact, key)
    if reason is None:
        return read_sidecar(artifact) or {}
    if artifact.exists() or sidecar_path(artifact).exists():
        if not rebuild:
            raise BackendError(f"cached graph {artifact} is not usable: {reason}; not using "
                               "it (delete it, or allow rebuilding: engine_rebuild true)")
        log.warning("rebuilding %s: %s", artifact.name, reason)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    # built under a private name and renamed into place: another process reading (or
    # building) the same cache sees the old file, or the new one, never half of one; a file
    # whose sidecar does not match yet is stale to it and never used
    tmp = _private(artifact)
    try:
        report = build(tmp)
        os.replace(tmp, artifact)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_sidecar(artifact, key, report)
    return read_sidecar(artifact) or {}
