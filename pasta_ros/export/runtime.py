"""Exported graphs as pipeline components, built on demand and cached on disk.

:class:`ExportedBackbone` is a Backbone that, for each network input size it meets, exports
the torch backbone to ONNX once (then, for tensorrt, builds or reuses a cached engine) and
runs that graph. :class:`ExportedClusterMap` does the same for the fused pixels -> cluster
map graph of a calibrated model. Call ``prepare((W, H))`` at start-up (node configure) so
the first frame does not pay for an export or an engine build.

Every cached ONNX file (fp32, and int8 for ``ort_precision int8``) has a JSON sidecar with
its key (backbone + weights or model id, input size, precision), sha256 and parity report
(:mod:`pasta_ros.export.artifacts`): a corrupt file, or one of another model or size, is
rebuilt with a warning, or refused with the reason when rebuilding is off; never used.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pasta_ros.core.backbones.base import Backbone
from pasta_ros.core.backends import ClusterMapRunner, RunnerBackbone, check_backend, open_runner
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.threads import process_threads
from pasta_ros.export.artifacts import ArtifactKey, ensure_artifact
from pasta_ros.export.fused import FusedClusterNet, export_fused, fused_from_model
from pasta_ros.export.onnx_export import ExportError, export_backbone

log = logging.getLogger("pasta.export")

MIN_COSINE = 0.999  # an exported graph further from torch than this is broken, not imprecise


@dataclass(frozen=True)
class RuntimeOptions:
    """backend: onnxruntime | tensorrt; cache_dir: where ONNX files and engines live;
    precision: fp32 | fp16 (tensorrt); rebuild: allow rebuilding a stale engine or ONNX
    file (a missing one is always built); threads: ONNX Runtime intra-op threads (0 = the
    process's count, :func:`~pasta_ros.core.threads.process_threads`); ort_precision:
    fp32 | int8 (onnxruntime backbone graphs)."""

    backend: str
    cache_dir: Path
    device: str = "auto"
    precision: str = "fp16"
    rebuild: bool = True
    threads: int = 0
    ort_precision: str = "fp32"


def _open(opts: RuntimeOptions, artifact: Path):
    return open_runner(opts.backend, artifact, opts.device,
                       threads=opts.threads or process_threads())


def _engine_for(onnx: Path, stem: str, size: tuple[int, int], opts: RuntimeOptions) -> Path:
    from pasta_ros.export import tensorrt_build as tb

    key = tb.current_key(opts.precision, size)
    return tb.resolve_engine(onnx, opts.cache_dir, stem, key, tb.make_builder(opts.precision),
                             rebuild=opts.rebuild)


def _artifact(onnx: Path, stem: str, size: tuple[int, int], opts: RuntimeOptions) -> Path:
    return _engine_for(onnx, stem, size, opts) if opts.backend == "tensorrt" else onnx


class ExportedBackbone(Backbone):
    """A torch backbone replaced by its exported graph, one graph per input size.

    ``tag`` distinguishes weights (use the weights fingerprint) so a cached ONNX file never
    outlives the weights it was exported from. forward: as :class:`Backbone`.
    """

    def __init__(self, backbone: Backbone, opts: RuntimeOptions, tag: str) -> None:
        super().__init__()
        check_backend(opts.backend, opts.device)
        # Not a registered submodule: FeatureExtractor's .to(device) must not move the
        # export source, which stays on the CPU.
        object.__setattr__(self, "source", backbone)
        self.info = backbone.info
        self.opts = opts
        self.tag = tag
        self._runners: dict[tuple[int, int], RunnerBackbone] = {}
        self.artifacts: dict[tuple[int, int], dict] = {}  # size -> paths + parity, for reports
        self.quant_inputs: list[np.ndarray] = []  # (1, 3, H, W) float32, for int8 calibration
        self._collect = 0
        self._fp32_runners: dict[tuple[int, int], RunnerBackbone] = {}

    def _stem(self) -> str:
        return f"{self.info.name.replace(':', '-').replace('+', '_')}-{self.tag}"

    def collect_inputs(self, n: int) -> None:
        """Keep the first ``n`` inputs this backbone runs on (calibration's baseline images)
        as the int8 quantizer's calibration data; until :meth:`prepare` builds the int8
        graph, frames run on the fp32 graph."""
        self._collect = n

    def _export(self, size: tuple[int, int], path: Path) -> dict:
        report = export_backbone(self.info.name, path.parent, size, backbone=self.source,
                                 file_name=path.name)
        cos = report.parity[0].cosine
        if cos is not None and cos < MIN_COSINE:
            path.unlink(missing_ok=True)
            raise ExportError(f"{path.name}: ONNX Runtime disagrees with torch "
                              f"({report.parity[0].line()}); not using it")
        return report.to_json()

    def _quantize(self, fp32: Path, path: Path, size: tuple[int, int]) -> dict:
        from pasta_ros.export.quantize import quantize_int8

        inputs = [x for x in self.quant_inputs if (x.shape[-1], x.shape[-2]) == size]
        if not inputs:
            raise ExportError(f"no valid int8 graph for {self.info.name} at {size[0]}x{size[1]}"
                              " in the cache and no baseline images to calibrate one; "
                              "calibrate with ort_precision int8 (or use fp32)")
        return quantize_int8(fp32, path, inputs)

    def _fp32(self, size: tuple[int, int]) -> tuple[Path, dict]:
        w, h = size
        onnx = self.opts.cache_dir / f"{self._stem()}-{w}x{h}.onnx"
        key = ArtifactKey("backbone", f"{self.info.name}@{self.tag}", size, "fp32")
        return onnx, ensure_artifact(onnx, key, lambda p: self._export(size, p),
                                     rebuild=self.opts.rebuild)

    def prepare(self, size: tuple[int, int]) -> RunnerBackbone:
        """Export/build (or reuse) the graph for network input ``size = (W, H)``; for int8,
        quantize it from the inputs collected so far (then stop collecting)."""
        if size in self._runners:
            return self._runners[size]
        w, h = size
        graph, side = self._fp32(size)
        if self.opts.backend == "onnxruntime" and self.opts.ort_precision == "int8":
            fp32 = graph
            graph = fp32.with_name(fp32.stem + "-int8.onnx")
            key = ArtifactKey("backbone", f"{self.info.name}@{self.tag}", size, "int8")
            side = ensure_artifact(graph, key, lambda p: self._quantize(fp32, p, size),
                                   rebuild=self.opts.rebuild)
            self._collect, self.quant_inputs = 0, []
        artifact = _artifact(graph, self._stem(), size, self.opts)
        self.artifacts[size] = {**(side.get("parity") or {}), "path": str(graph),
                                "input_size": [w, h], "artifact": str(artifact)}
        self._runners[size] = RunnerBackbone(_open(self.opts, artifact), self.info)
        return self._runners[size]

    def install(self, dest: Path) -> list[Path]:
        """Copy the prepared graphs and their sidecars into ``dest`` (a new model's
        ``engines/``), so a restart on that model reuses them; returns the copied graphs."""
        import shutil

        from pasta_ros.export.artifacts import sidecar_path

        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for info in self.artifacts.values():
            src = Path(info["path"])
            if src.parent.resolve() != dest.resolve() and src.is_file():
                shutil.copy2(src, dest / src.name)
                shutil.copy2(sidecar_path(src), sidecar_path(dest / src.name))
                out.append(dest / src.name)
        return out

    def _collecting_runner(self, size: tuple[int, int]) -> RunnerBackbone:
        """The fp32 graph, while baseline inputs are still kept for int8 calibration: the
        whole calibration runs in fp32 and the int8 graph is built after it."""
        if size not in self._fp32_runners:
            onnx, _ = self._fp32(size)
            self._fp32_runners[size] = RunnerBackbone(_open(self.opts, onnx), self.info)
        return self._fp32_runners[size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-1]), int(x.shape[-2]))
        if self._collect and size not in self._runners:
            keep = min(x.shape[0], self._collect - len(self.quant_inputs))
            self.quant_inputs.extend(x[i:i + 1].detach().cpu().float().numpy().copy()
                                     for i in range(max(0, keep)))
            return self._collecting_runner(size)(x)
        return self.prepare(size)(x)


class ExportedClusterMap:
    """The fused graph of a calibrated model: ``(H, W, 3) uint8`` images at the network size
    -> ``(B, h, w) int64`` cluster ids, one graph per input size (exported on first use)."""

    def __init__(self, model: CalibratedModel, backbone: Backbone, opts: RuntimeOptions) -> None:
        check_backend(opts.backend, opts.device)
        # A private CPU copy: the caller's backbone may be moved to the GPU by an extractor
        # before the first frame triggers the export.
        self.net: FusedClusterNet = fused_from_model(model, copy.deepcopy(backbone).cpu())
        self.model_id = model.model_id
        self.opts = opts
        self._runners: dict[tuple[int, int], ClusterMapRunner] = {}
        self.artifacts: dict[tuple[int, int], dict] = {}

    def prepare(self, size: tuple[int, int]) -> ClusterMapRunner:
        if size in self._runners:
            return self._runners[size]
        w, h = size
        stem = f"fused-{self.model_id}"
        onnx = self.opts.cache_dir / f"{stem}-{w}x{h}.onnx"
        side = ensure_artifact(onnx, ArtifactKey("fused", self.model_id, size, "fp32"),
                               lambda p: self._export(size, p), rebuild=self.opts.rebuild)
        artifact = _artifact(onnx, stem, size, self.opts)
        self.artifacts[size] = {**(side.get("parity") or {}), "path": str(onnx),
                                "input_size": [w, h], "artifact": str(artifact)}
        self._runners[size] = ClusterMapRunner(_open(self.opts, artifact))
        return self._runners[size]

    def _export(self, size: tuple[int, int], path: Path) -> dict:
        report = export_fused(self.net, path, size)
        agreement = report.parity[0].agreement or 0.0
        if agreement < MIN_COSINE:
            path.unlink(missing_ok=True)
            raise ExportError(f"{path.name}: cluster maps agree with torch on only "
                              f"{agreement:.3%} of patches; not using it")
        return report.to_json()

    def __call__(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        h, w = prepared[0].shape[:2]
        return self.prepare((w, h))(prepared)
