"""Exported graphs as pipeline components, built on demand and cached on disk.

:class:`ExportedBackbone` is a Backbone that, for each network input size it meets, exports
the torch backbone to ONNX once (then, for tensorrt, builds or reuses a cached engine) and
runs that graph. :class:`ExportedClusterMap` does the same for the fused pixels -> cluster
map graph of a calibrated model. Call ``prepare((W, H))`` at start-up (node configure) so
the first frame does not pay for an export or an engine build.
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
from pasta_ros.export.fused import FusedClusterNet, export_fused, fused_from_model
from pasta_ros.export.onnx_export import ExportError, export_backbone

log = logging.getLogger("pasta.export")

MIN_COSINE = 0.999  # an exported graph further from torch than this is broken, not imprecise


@dataclass(frozen=True)
class RuntimeOptions:
    """backend: onnxruntime | tensorrt; cache_dir: where ONNX files and engines live;
    precision: fp32 | fp16 (tensorrt); rebuild: allow building a missing/stale engine;
    threads: ONNX Runtime intra-op threads (0 = its default)."""

    backend: str
    cache_dir: Path
    device: str = "auto"
    precision: str = "fp16"
    rebuild: bool = True
    threads: int = 0


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

    def _stem(self) -> str:
        return f"{self.info.name.replace(':', '-').replace('+', '_')}-{self.tag}"

    def prepare(self, size: tuple[int, int]) -> RunnerBackbone:
        """Export/build (or reuse) the graph for network input ``size = (W, H)``."""
        if size in self._runners:
            return self._runners[size]
        w, h = size
        onnx = self.opts.cache_dir / f"{self._stem()}-{w}x{h}.onnx"
        if not onnx.is_file():
            report = export_backbone(self.info.name, self.opts.cache_dir, size,
                                     backbone=self.source, file_name=onnx.name)
            cos = report.parity[0].cosine
            if cos is not None and cos < MIN_COSINE:
                onnx.unlink(missing_ok=True)
                raise ExportError(f"{onnx.name}: ONNX Runtime disagrees with torch "
                                  f"({report.parity[0].line()}); not using it")
            self.artifacts[size] = report.to_json()
        artifact = _artifact(onnx, self._stem(), size, self.opts)
        self.artifacts.setdefault(size, {"path": str(onnx), "input_size": [w, h]})
        self.artifacts[size]["artifact"] = str(artifact)
        runner = open_runner(self.opts.backend, artifact, self.opts.device,
                             threads=self.opts.threads)
        self._runners[size] = RunnerBackbone(runner, self.info)
        return self._runners[size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepare((int(x.shape[-1]), int(x.shape[-2])))(x)


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
        if not onnx.is_file():
            report = export_fused(self.net, onnx, size)
            agreement = report.parity[0].agreement or 0.0
            if agreement < MIN_COSINE:
                onnx.unlink(missing_ok=True)
                raise ExportError(f"{onnx.name}: cluster maps agree with torch on only "
                                  f"{agreement:.3%} of patches; not using it")
            self.artifacts[size] = report.to_json()
        artifact = _artifact(onnx, stem, size, self.opts)
        self.artifacts.setdefault(size, {"path": str(onnx), "input_size": [w, h]})
        self.artifacts[size]["artifact"] = str(artifact)
        runner = open_runner(self.opts.backend, artifact, self.opts.device,
                             threads=self.opts.threads)
        self._runners[size] = ClusterMapRunner(runner)
        return self._runners[size]

    def __call__(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        h, w = prepared[0].shape[:2]
        return self.prepare((w, h))(prepared)
