"""ONNX Runtime runner: CPU here; CUDA and TensorRT execution providers with onnxruntime-gpu.

On a CUDA provider the inputs and outputs are bound to torch CUDA tensors with I/O binding,
so no frame crosses to the host; on CPU numpy views of torch tensors are used (no copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pasta_ros.core.backends.base import BackendError, Dim

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def select_providers(available: Sequence[str], device: str, *,
                     tensorrt_ep: bool = False) -> list[str]:
    """Execution providers for ``device`` (cpu | cuda | auto) from those ``available``.

    cpu -> CPU only; cuda -> CUDA (TensorRT EP first when ``tensorrt_ep``), with CPU as the
    fallback for unsupported nodes; cuda without a CUDA provider -> BackendError; auto ->
    the cuda choice when possible, else CPU.
    """
    if device == "cpu":
        return [CPU]
    has_cuda = CUDA in available
    if device.startswith("cuda") and not has_cuda:
        raise BackendError(
            "onnxruntime on cuda requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu on the GPU machine "
            "or use device cpu")
    if not has_cuda:
        return [CPU]
    if tensorrt_ep and TENSORRT not in available:
        raise BackendError("the ONNX Runtime TensorRT execution provider was requested but "
                           f"is not available (available: {', '.join(available)})")
    return ([TENSORRT] if tensorrt_ep else []) + [CUDA, CPU]


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("onnxruntime requested but the onnxruntime module is not installed "
                           "(pip install onnxruntime, or onnxruntime-gpu on a GPU machine)"
                           ) from exc
    return onnxruntime


class OrtRunner:
    """One ONNX file in an ONNX Runtime session (see module docstring)."""

    def __init__(self, path: str | Path, *, device: str = "cpu", tensorrt_ep: bool = False,
                 threads: int = 0, trt_cache_dir: str | Path | None = None) -> None:
        ort = require_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"ONNX file not found: {path}")
        providers: list = select_providers(ort.get_available_providers(), device,
                                           tensorrt_ep=tensorrt_ep)
        if TENSORRT in providers and trt_cache_dir:
            providers[0] = (TENSORRT, {"trt_engine_cache_enable": True,
                                       "trt_engine_cache_path": str(trt_cache_dir)})
        self.session = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                            providers=providers)
        self.name = path.name
        # Bind torch CUDA tensors only when torch itself has CUDA; else ORT copies from host.
        self.on_gpu = self.session.get_providers()[0] in (CUDA, TENSORRT) and \
            torch.cuda.is_available()
        self.device = torch.device("cuda" if self.on_gpu else "cpu")
        self.input_shapes: dict[str, tuple[Dim, ...]] = {
            i.name: tuple(i.shape) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.on_gpu:
            return self._run_bound(inputs)
        feeds = {k: v.detach().cpu().contiguous().numpy() for k, v in inputs.items()}
        outs = self.session.run(self.output_names, feeds)
        return {k: torch.from_numpy(np.asarray(v)) for k, v in zip(self.output_names, outs)}

    def _run_bound(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """I/O binding on torch CUDA tensors; outputs are allocated by ORT on the device and
        handed to torch through DLPack (no host copy)."""  # pragma: no cover - needs a GPU
        binding = self.session.io_binding()
        for name, t in inputs.items():
            t = t.to(self.device).contiguous()
            binding.bind_input(name, "cuda", 0, _np_dtype(t.dtype), tuple(t.shape), t.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        torch.cuda.current_stream().synchronize()  # inputs written by torch are ready
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return {name: torch.from_dlpack(o.to_dlpack()) if hasattr(o, "to_dlpack")
                else torch.from_numpy(o.numpy()).to(self.device)
                for name, o in zip(self.output_names, outs)}


def _np_dtype(dtype: torch.dtype) -> type:
    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
            torch.int32: np.int32, torch.uint8: np.uint8, torch.bool: np.bool_}[dtype]


def session_options(threads: int = 0):
    """ONNX Runtime session options: full graph optimisation, quiet logs; ``threads`` > 0 pins
    intra-op threads and turns spinning off (so ORT does not steal cores from torch)."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
