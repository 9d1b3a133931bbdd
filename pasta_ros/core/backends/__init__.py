"""Inference backends behind one interface: torch (eager), onnxruntime and tensorrt.

``check_backend(name, device)`` fails early with a message naming what is missing;
``open_runner(name, artifact, device)`` loads an exported graph (ONNX file or engine) as a
:class:`GraphRunner`; :class:`RunnerBackbone` makes a feature graph a drop-in Backbone and
:class:`ClusterMapRunner` runs a fused pixels -> cluster-map graph. Building the artefacts
(export, engine cache) is ``pasta_ros.export``'s job.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pasta_ros.core.backends.base import (
    BackendError,
    ClusterMapRunner,
    GraphRunner,
    RunnerBackbone,
    check_shape,
)

BACKENDS = ("torch", "onnxruntime", "tensorrt")

__all__ = ["BACKENDS", "BackendError", "ClusterMapRunner", "GraphRunner", "RunnerBackbone",
           "check_backend", "check_shape", "open_runner"]


def check_backend(name: str, device: str = "auto") -> None:
    """Raise BackendError when backend ``name`` cannot run here on ``device``
    (auto | cpu | cuda): unknown name, module not installed, or no CUDA GPU."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "onnxruntime":
        from pasta_ros.core.backends.onnxruntime import require_onnxruntime

        require_onnxruntime()
    elif name == "tensorrt":
        if device == "cpu":
            raise BackendError("tensorrt runs on a CUDA GPU only but device 'cpu' was "
                               "requested; use device auto/cuda, or backend onnxruntime")
        from pasta_ros.core.backends.tensorrt import require_tensorrt_gpu

        require_tensorrt_gpu()
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError("device 'cuda' was requested but torch sees no CUDA GPU; use "
                           "device cpu or auto")


def open_runner(name: str, artifact: str | Path, device: str = "auto", *,
                threads: int = 0, tensorrt_ep: bool = False) -> GraphRunner:
    """Load an exported graph: an ``.onnx`` file for onnxruntime, an ``.engine`` for
    tensorrt. ``threads`` > 0 pins ONNX Runtime's intra-op threads."""
    check_backend(name, device)
    if name == "onnxruntime":
        from pasta_ros.core.backends.onnxruntime import OrtRunner

        return OrtRunner(artifact, device=device, threads=threads, tensorrt_ep=tensorrt_ep)
    if name == "tensorrt":
        from pasta_ros.core.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(artifact)
    raise BackendError("backend 'torch' runs the module itself and loads no exported graph")
