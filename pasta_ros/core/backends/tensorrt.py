"""TensorRT runner: a serialised engine executed on torch CUDA tensors.

Inputs and outputs are torch CUDA tensors whose device pointers are bound to the engine's
I/O tensors, and the engine is enqueued on torch's current stream: backbone, assignment and
fusion all stay on the GPU with no host round trip and no extra synchronisation.
``tensorrt`` is imported only when a runner is built.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pasta_ros.core.backends.base import BackendError, Dim


def require_tensorrt_gpu():
    """The ``tensorrt`` module when it and a CUDA GPU are present; else a BackendError that
    names what is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError("tensorrt requested but the tensorrt module is not installed "
                           "(pip install tensorrt, or JetPack's python3-libnvinfer on a "
                           "Jetson); use backend onnxruntime or torch") from exc
    if not torch.cuda.is_available():
        raise BackendError("tensorrt requested but torch sees no CUDA GPU (no GPU, no driver, "
                           "or a CPU-only torch build); use backend onnxruntime or torch")
    return tensorrt


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8,
             trt.DataType.BOOL: torch.bool}
    for name, tdt in (("INT64", torch.int64), ("UINT8", torch.uint8), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdt
    if dtype not in table:
        raise BackendError(f"engine tensor type {dtype} has no torch equivalent")
    return table[dtype]


class TensorRTRunner:  # pragma: no cover - needs tensorrt and a GPU (tests marked gpu)
    """One deserialised engine with one execution context (TensorRT 10 tensor API)."""

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        trt = require_tensorrt_gpu()
        self._trt = trt
        path = Path(engine_path)
        if not path.is_file():
            raise BackendError(f"TensorRT engine not found: {path}")
        self.device = torch.device("cuda", device)
        self.name = path.name
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path} cannot be deserialised: it was built with another "
                               "TensorRT version or for another GPU; rebuild it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_shapes: dict[str, tuple[Dim, ...]] = {
            n: tuple(self.engine.get_tensor_shape(n)) for n in names if is_in[n]}
        self.output_names = [n for n in names if not is_in[n]]
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self._profile = -1

    def profiles(self, name: str) -> list[tuple[tuple, tuple, tuple]]:
        """(min, opt, max) shapes of input ``name`` in each optimisation profile."""
        return [tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(name, i))
                for i in range(self.engine.num_optimization_profiles)]

    def _choose_profile(self, name: str, shape: tuple[int, ...], stream: int) -> None:
        from pasta_ros.core.backends.profiles import Profile, select_profile

        if -1 not in self.input_shapes[name]:
            return
        profs = [Profile(*p) for p in self.profiles(name)]
        idx = select_profile(shape, profs)
        if idx != self._profile:
            self.context.set_optimization_profile_async(idx, stream)
            self._profile = idx

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream(self.device)
        keep = []  # tensors must outlive the enqueue
        for name, t in inputs.items():
            t = t.to(self.device, self._dtypes[name]).contiguous()
            keep.append(t)
            self._choose_profile(name, tuple(t.shape), stream.cuda_stream)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT execution of {self.name} failed")
        return outs
