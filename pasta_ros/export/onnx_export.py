"""Export a torch module to ONNX at a fixed input size and check it against torch.

The TorchScript-based exporter (``dynamo=False``) is the default: it needs nothing beyond
torch and ``onnx`` and handles every registry backbone and the SAM 3 parts. Data-dependent
Python (EfficientNet's 'same' padding, ViT position interpolation, SAM 3's RoPE tables) is
evaluated at the export size, so each file is valid for that input size only; the file name
records it. ``dynamo=True`` uses ``torch.export`` and needs the ``onnxscript`` package.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pasta_ros.core.backbones import build_backbone
from pasta_ros.core.backbones.base import Backbone
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.errors import PastaError
from pasta_ros.core.preprocess import network_size

log = logging.getLogger("pasta.export")

MIN_OPSET = 17
DEFAULT_OPSET = 17


class ExportError(PastaError):
    """An export step failed or its output does not match torch; the message says which."""


@dataclass(frozen=True)
class Parity:
    """Numerical agreement of one output between torch and ONNX Runtime.

    max_abs: max |a - b|. cosine: cosine of the flattened outputs. agreement: share of
    patches whose nearest centre is the same. None where a figure does not apply (cluster-id
    outputs have only an agreement; non-feature outputs none).
    """

    name: str
    max_abs: float | None
    cosine: float | None
    agreement: float | None = None

    def line(self) -> str:
        parts = [] if self.max_abs is None else [f"max abs error {self.max_abs:.3g}"]
        parts += [] if self.cosine is None else [f"cosine {self.cosine:.6f}"]
        parts += [] if self.agreement is None else [f"cluster agreement {self.agreement:.4%}"]
        return f"{self.name}: {', '.join(parts)}"


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely ONNX Runtime reproduced torch."""

    path: str
    input_size: tuple[int, int]
    opset: int
    parity: tuple[Parity, ...]

    def to_json(self) -> dict:
        return {"path": self.path, "input_size": list(self.input_size), "opset": self.opset,
                "parity": [asdict(p) for p in self.parity]}


def export_onnx(module: nn.Module, example: Sequence[torch.Tensor], path: str | Path, *,
                input_names: Sequence[str], output_names: Sequence[str],
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                dynamo: bool = False, static_pad: bool = False) -> Path:
    """Trace ``module(*example)`` to an ONNX file and run ``onnx.checker`` on it.

    static_pad: fix dynamic TF-'same' paddings at the example's size and fold them into the
    ``Conv`` nodes (:mod:`pasta_ros.export.static_pad`; ~2x faster in ONNX Runtime for lite0).

    dynamic_batch: mark dim 0 of every input and output as ``batch`` (TensorRT then needs an
    optimisation profile). Raises ExportError on an opset below 17 or a failed trace/check.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"input_names": list(input_names), "output_names": list(output_names),
                    "opset_version": opset, "dynamo": dynamo}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {n: {0: "batch"} for n in (*input_names, *output_names)}
    if dynamo:
        try:
            import onnxscript  # noqa: F401
        except ImportError as exc:
            raise ExportError("the dynamo exporter needs the onnxscript package "
                              "(pip install onnxscript), or export with dynamo=False") from exc
    else:
        kwargs["do_constant_folding"] = True
    module = module.eval()
    if static_pad:
        from pasta_ros.export.static_pad import static_padding

        module = static_padding(module, example).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings: shapes are fixed on purpose
            torch.onnx.export(module, tuple(example), str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - any tracer failure is an export failure
        first = (str(exc).strip().splitlines() or [""])[0][:400]  # the IR dump follows
        raise ExportError(f"ONNX export of {type(module).__name__} failed: "
                          f"{type(exc).__name__}: {first}") from exc
    check_onnx(path)
    return path


def check_onnx(path: str | Path) -> None:
    """``onnx.checker.check_model`` on a file (by path, so >2 GB models work too)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # noqa: BLE001 - checker raises several types
        raise ExportError(f"{path} fails onnx.checker: {exc}") from exc


def ort_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                threads: int = 0):
    """An ONNX Runtime session; ``threads`` > 0 pins intra-op threads and turns spinning off
    (so a benchmark does not steal cores from torch running next to it)."""
    import onnxruntime as ort

    from pasta_ros.core.backends.onnxruntime import session_options
    return ort.InferenceSession(str(path), sess_options=session_options(threads),
                                providers=list(providers))


def compare(name: str, ref: np.ndarray, out: np.ndarray) -> Parity:
    """Max abs error and cosine between two same-shape arrays."""
    if ref.shape != out.shape:
        raise ExportError(f"{name}: ONNX output shape {out.shape} != torch {ref.shape}")
    a, b = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))
    return Parity(name, float(np.abs(a - b).max()) if a.size else 0.0, cosine)


def sample_centers(features: torch.Tensor, k: int = 16, seed: int = 0) -> torch.Tensor:
    """``k`` distinct patch rows of a ``(B, C, h, w)`` grid, L2-normalised, as ``(k, C)``
    centres: a stand-in for calibrated centres when checking assignment agreement."""
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).float()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(rows.shape[0], generator=gen)[: min(k, rows.shape[0])]
    return torch.nn.functional.normalize(rows[idx], dim=1)


def cluster_agreement(ref: torch.Tensor, out: torch.Tensor, centers: torch.Tensor) -> float:
    """Share of patches with the same nearest centre for two ``(B, C, h, w)`` grids."""
    a = assign_clusters(ref.float(), centers)
    b = assign_clusters(out.float(), centers)
    return float((a == b).float().mean())


def backbone_file_name(name: str, size: tuple[int, int], *, tiny: bool = False) -> str:
    """``efficientnet_lite0-912x512.onnx`` (``:`` of tap suffixes becomes ``-``)."""
    stem = name.replace(":", "-").replace("+", "_")
    return f"{stem}{'-tiny' if tiny else ''}-{size[0]}x{size[1]}.onnx"


def export_backbone(name: str, out_dir: str | Path, input_size: tuple[int, int], *,
                    weights: str = "", tiny: bool = False, opset: int = DEFAULT_OPSET,
                    dynamic_batch: bool = False, backbone: Backbone | None = None,
                    centers: torch.Tensor | None = None, seed: int = 0,
                    file_name: str | None = None) -> ExportReport:
    """Export registry backbone ``name`` at ``input_size = (W, H)`` (rounded to the stride as
    the pipeline does) and compare ONNX Runtime with torch on a seeded random image.

    Input ``image``: ``(B, 3, H, W) float32`` normalised; output ``features``: ``(B, C, h, w)``.
    ``centers`` ``(K, C)``: calibrated centres for the agreement figure (else sampled rows).
    """
    backbone = backbone or build_backbone(name, weights, tiny=tiny)
    stride = backbone.info.stride
    w, h = network_size(input_size[0], input_size[1], input_size[0], input_size[1], stride)
    path = Path(out_dir) / (file_name or backbone_file_name(name, (w, h), tiny=tiny))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=gen)
    mean = torch.tensor(backbone.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.info.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    export_onnx(backbone, (x,), path, input_names=["image"], output_names=["features"],
                opset=opset, dynamic_batch=dynamic_batch, static_pad=True)
    with torch.inference_mode():
        ref = backbone(x)
    out = torch.from_numpy(ort_session(path).run(None, {"image": x.numpy()})[0])
    parity = compare("features", ref.numpy(), out.numpy())
    cents = centers if centers is not None else sample_centers(ref, seed=seed)
    if cents.shape[1] == ref.shape[1]:
        parity = Parity(parity.name, parity.max_abs, parity.cosine,
                        cluster_agreement(ref, out, cents))
    report = ExportReport(str(path), (w, h), opset, (parity,))
    log.info("exported %s -> %s; %s", name, path, parity.line())
    return report
