"""The backend interface: a compiled graph run on named torch tensors, and the two adapters
the pipeline uses (a feature Backbone, a cluster-map producer).

A :class:`GraphRunner` (ONNX Runtime session, TensorRT engine) takes and returns torch
tensors, so a CUDA runner can keep everything on the GPU. :class:`RunnerBackbone` is a
:class:`Backbone`, so FeatureExtractor, calibration and the pipeline use it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from pasta_ros.core.backbones.base import Backbone, BackboneInfo
from pasta_ros.core.errors import PastaError

Dim = int | str | None  # a graph dimension: fixed int, or a symbolic / unknown one


class BackendError(PastaError):
    """A backend cannot be used here (module or GPU missing) or a graph does not fit."""


class GraphRunner(Protocol):
    """A compiled graph. ``input_shapes``/``output_names`` describe it; ``run`` maps input
    name -> tensor to output name -> tensor (on the runner's device)."""

    name: str
    device: torch.device
    input_shapes: dict[str, tuple[Dim, ...]]
    output_names: list[str]

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


def check_shape(runner: GraphRunner, name: str, shape: Sequence[int]) -> None:
    """Raise BackendError when ``shape`` does not fit the graph's input ``name``."""
    want = runner.input_shapes[name]
    fixed_ok = len(want) == len(shape) and all(
        not isinstance(w, int) or w < 0 or w == s for w, s in zip(want, shape))
    if not fixed_ok:
        shown = "x".join("?" if not isinstance(w, int) or w < 0 else str(w) for w in want)
        raise BackendError(f"{runner.name}: input {name} has shape {tuple(shape)} but the graph "
                           f"was exported for {shown}; export it again at this input size")


class RunnerBackbone(Backbone):
    """A feature graph as a Backbone: ``(B, 3, H, W) float32`` normalised ->
    ``(B, C, h, w) float32`` on the input's device. Batches larger than a fixed graph batch
    run in slices."""

    def __init__(self, runner: GraphRunner, info: BackboneInfo) -> None:
        super().__init__()
        self.runner = runner
        self.info = info
        self.input_name = next(iter(runner.input_shapes))
        self.output_name = runner.output_names[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed_b = self.runner.input_shapes[self.input_name][0]
        step = fixed_b if isinstance(fixed_b, int) and fixed_b > 0 else x.shape[0]
        outs = []
        for i in range(0, x.shape[0], step):
            part = x[i:i + step].float().contiguous()
            check_shape(self.runner, self.input_name, tuple(part.shape))
            outs.append(self.runner.run({self.input_name: part})[self.output_name])
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.to(x.device).float()


class ClusterMapRunner:
    """A fused graph (pixels -> cluster ids): ``(H, W, 3) uint8`` images at the network size
    -> ``(B, h, w) int64`` on ``runner.device``."""

    def __init__(self, runner: GraphRunner) -> None:
        self.runner = runner
        self.input_name = next(iter(runner.input_shapes))
        self.output_name = runner.output_names[0]

    def __call__(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        outs = []
        for img in prepared:  # a fixed batch of 1 is the common engine shape
            arr = np.ascontiguousarray(img)[None]
            if not arr.flags.writeable:  # a read-only frame buffer: torch wants a writable one
                arr = arr.copy()
            x = torch.from_numpy(arr).to(self.runner.device)
            check_shape(self.runner, self.input_name, tuple(x.shape))
            outs.append(self.runner.run({self.input_name: x})[self.output_name])
        return torch.cat(outs).long()
