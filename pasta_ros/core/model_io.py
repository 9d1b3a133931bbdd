"""A calibrated PASTA model as a directory: ``manifest.json`` + ``arrays.npz``.

The manifest records everything needed to reproduce and validate the model (backbone,
weights hash, input size, K, thresholds, both distributions, anomaly and background
cluster ids, versions, a model id) and the sha256 of the arrays file, so loading detects
truncation or edits and any mismatch with the runtime.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pasta_ros import __version__
from pasta_ros.core.errors import ModelError
from pasta_ros.core.segmenters.color_model import N_BINS

FORMAT = "pasta-model/1"
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
MIN_SIDE, MAX_SIDE = 16, 8192  # input sizes a model can have (pixels per side)
METHOD_PREFIX = "method/"


@dataclass
class CalibratedModel:
    """Phase 1 + 2 result. Arrays: centers ``(K, C) float32``; p_* ``(K,) float64``;
    anomaly/background ``(K,) bool``; color_log_odds ``(4096,) float32``."""

    backbone: str
    weights_hash: str
    input_size: tuple[int, int]
    stride: int
    centers: np.ndarray
    p_baseline: np.ndarray
    p_reference: np.ndarray
    anomaly: np.ndarray
    background: np.ndarray
    color_log_odds: np.ndarray
    ratio_threshold: float
    vote_threshold: float
    seed: int
    background_source: str = "border"
    color_weight: float = 0.0
    p_empty: np.ndarray | None = None
    # empty-scene instance bank (core/distractor_bank.py): (N, C) float32 and its threshold
    distractor_bank: np.ndarray | None = None
    distractor_threshold: float = 1.0
    stats: dict = field(default_factory=dict)
    model_id: str = ""
    created: str = ""
    # the calibration method (a METHODS key) and what it adds: JSON-able settings and arrays
    # (stored as ``method/<name>`` in arrays.npz); empty for "pasta"
    method: str = "pasta"
    method_params: dict = field(default_factory=dict)
    method_arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    @property
    def channels(self) -> int:
        return int(self.centers.shape[1])

    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.p_reference / self.p_baseline

    def finalize(self) -> CalibratedModel:
        """Stamp the creation time and a content-derived model id."""
        self.created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        extra = b"".join(v.tobytes() for v in self.method_arrays.values())
        digest = hashlib.sha256(self.centers.tobytes() + self.anomaly.tobytes() + extra
                                + self.created.encode()).hexdigest()[:10]
        prefix = "" if self.method == "pasta" else f"{self.method}-"
        self.model_id = (f"{prefix}{self.backbone.replace(':', '-')}-k{self.k}-s{self.seed}-"
                         f"{digest}")
        return self


def _arrays(model: CalibratedModel) -> dict[str, np.ndarray]:
    arrays = {"centers": model.centers.astype(np.float32),
              "p_baseline": model.p_baseline.astype(np.float64),
              "p_reference": model.p_reference.astype(np.float64),
              "anomaly": model.anomaly.astype(bool), "background": model.background.astype(bool),
              "color_log_odds": model.color_log_odds.astype(np.float32)}
    if model.p_empty is not None:
        arrays["p_empty"] = model.p_empty.astype(np.float64)
    if model.distractor_bank is not None:
        arrays["distractor_bank"] = model.distractor_bank.astype(np.float32)
    arrays |= {METHOD_PREFIX + k: v for k, v in model.method_arrays.items()}
    return arrays


def _versions() -> dict[str, str]:
    import sklearn
    import torch
    return {"pasta_ros": __version__, "numpy": np.__version__, "torch": torch.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version()}


def save_model(model: CalibratedModel, directory: str | Path) -> Path:
    """Write ``directory/manifest.json`` and ``directory/arrays.npz``; returns the directory.

    Files are written to temporaries and renamed, so a crash never leaves a half model."""
    if not model.model_id:
        model.finalize()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **_arrays(model))
    blob = buf.getvalue()
    manifest = {
        "format": FORMAT, "model_id": model.model_id, "created": model.created,
        "method": model.method, "method_params": model.method_params,
        "backbone": model.backbone, "weights_hash": model.weights_hash,
        "input_size": list(model.input_size), "stride": model.stride,
        "clusters": model.k, "channels": model.channels, "seed": model.seed,
        "ratio_threshold": model.ratio_threshold, "vote_threshold": model.vote_threshold,
        "background_source": model.background_source, "color_weight": model.color_weight,
        "distractor_threshold": model.distractor_threshold,
        "p_baseline": model.p_baseline.round(8).tolist(),
        "p_reference": model.p_reference.round(8).tolist(),
        "p_empty": None if model.p_empty is None else model.p_empty.round(8).tolist(),
        "anomaly_clusters": np.flatnonzero(model.anomaly).tolist(),
        "background_clusters": np.flatnonzero(model.background).tolist(),
        "stats": model.stats, "versions": _versions(),
        "arrays_sha256": hashlib.sha256(blob).hexdigest(),
    }
    (out / (ARRAYS + ".tmp")).write_bytes(blob)
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=2))
    (out / (ARRAYS + ".tmp")).replace(out / ARRAYS)
    (out / (MANIFEST + ".tmp")).replace(out / MANIFEST)
    return out


def load_model(directory: str | Path) -> CalibratedModel:
    """Load and validate a model directory; raise ModelError naming what is wrong."""
    d = Path(directory)
    if not (d / MANIFEST).is_file():
        raise ModelError(f"{d} is not a PASTA model: expected {d / MANIFEST} and {d / ARRAYS} "
                         f"(create one with `pasta calibrate --out {d}`)")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{d / MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{d / MANIFEST}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{d / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if not (d / ARRAYS).is_file():
        raise ModelError(f"{d / ARRAYS} is missing")
    blob = (d / ARRAYS).read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest.get("arrays_sha256"):
        raise ModelError(f"{d / ARRAYS} does not match the checksum in its manifest: the file "
                         f"is corrupt or was modified; recalibrate")
    with np.load(io.BytesIO(blob)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _from_parts(manifest, arrays, d)


def _check_values(model: CalibratedModel, d: Path) -> None:
    """ModelError for values no calibration produces: non-finite arrays, an input size or
    stride that cannot be, thresholds outside [0, 1]."""
    for name in ("centers", "p_baseline", "p_reference", "color_log_odds", "p_empty",
                 "distractor_bank"):
        values = getattr(model, name)
        if values is not None and not np.isfinite(values).all():
            raise ModelError(f"{d}: array {name} holds NaN or infinite values; the model is "
                             "corrupt: recalibrate")
    w, h = model.input_size
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE) or \
            not 1 <= model.stride <= min(w, h):
        raise ModelError(f"{d}: input size {w}x{h} with stride {model.stride} is impossible "
                         f"(sides in [{MIN_SIDE}, {MAX_SIDE}]); the manifest is corrupt: "
                         "recalibrate")
    for name in ("ratio_threshold", "vote_threshold"):
        if not 0.0 <= getattr(model, name) <= 1.0:
            raise ModelError(f"{d}: {name} {getattr(model, name)} is outside [0, 1]; the "
                             "manifest is corrupt: recalibrate")


def _from_parts(m: dict, a: dict[str, np.ndarray], d: Path) -> CalibratedModel:
    try:
        k, c = int(m["clusters"]), int(m["channels"])
        model = CalibratedModel(
            backbone=m["backbone"], weights_hash=m["weights_hash"],
            input_size=(int(m["input_size"][0]), int(m["input_size"][1])), stride=int(m["stride"]),
            centers=a["centers"], p_baseline=a["p_baseline"], p_reference=a["p_reference"],
            anomaly=a["anomaly"], background=a["background"],
            color_log_odds=a["color_log_odds"], ratio_threshold=float(m["ratio_threshold"]),
            vote_threshold=float(m["vote_threshold"]), seed=int(m["seed"]),
            background_source=m["background_source"], p_empty=a.get("p_empty"),
            color_weight=float(m.get("color_weight", 0.0)),
            distractor_bank=a.get("distractor_bank"),
            distractor_threshold=float(m.get("distractor_threshold", 1.0)),
            stats=m.get("stats", {}), model_id=m["model_id"], created=m["created"],
            method=str(m.get("method", "pasta")), method_params=dict(m.get("method_params", {})),
            method_arrays={k[len(METHOD_PREFIX):]: v for k, v in a.items()
                           if k.startswith(METHOD_PREFIX)})
    except KeyError as exc:
        raise ModelError(f"{d}: the model lacks {exc}; recalibrate") from None
    except (TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{d}: the manifest has a malformed field ({exc}); "
                         "recalibrate") from None
    expected = {"centers": (k, c), "p_baseline": (k,), "p_reference": (k,), "anomaly": (k,),
                "background": (k,), "color_log_odds": (N_BINS,)}
    if model.p_empty is not None:
        expected["p_empty"] = (k,)
    if model.distractor_bank is not None:
        expected["distractor_bank"] = (model.distractor_bank.shape[0], c)
    for name, shape in expected.items():
        if getattr(model, name).shape != shape:
            raise ModelError(f"{d}: array {name} has shape {getattr(model, name).shape}, "
                             f"expected {shape} for K={k}, C={c}")
    if model.anomaly.dtype != bool or model.background.dtype != bool:
        raise ModelError(f"{d}: anomaly/background arrays must be boolean")
    _check_values(model, d)
    if np.flatnonzero(model.anomaly).tolist() != m.get("anomaly_clusters"):
        raise ModelError(f"{d}: anomaly clusters in the manifest and arrays disagree")
    return model
