"""int8 static quantization of an exported fp32 graph with ONNX Runtime's tooling.

QDQ format, per-channel int8 weights, uint8 activations with MinMax ranges calibrated on
inputs the caller collected from baseline images (``(1, 3, H, W) float32`` normalised). The
result is checked against the fp32 graph on held-out inputs (cosine, max abs error, and
nearest-centre agreement with centres sampled from the fp32 output).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pasta_ros.export.onnx_export import (
    ExportError,
    Parity,
    cluster_agreement,
    compare,
    ort_session,
    sample_centers,
)

log = logging.getLogger("pasta.export")

MIN_INT8_COSINE = 0.9  # below this the quantized graph is broken, not merely imprecise


class _Reader:
    """ORT CalibrationDataReader over a list of input arrays."""

    def __init__(self, name: str, inputs: Sequence[np.ndarray]) -> None:
        self._it = iter([{name: np.ascontiguousarray(x, np.float32)} for x in inputs])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:  # some ORT versions call it; a single pass is enough
        pass


def cpu_has_vnni() -> bool:
    """True when this CPU has VNNI int8 dot products (AVX512-VNNI or AVX-VNNI; Linux
    /proc/cpuinfo). Without them ONNX Runtime's u8 x s8 kernels can saturate the 16-bit
    intermediate sums, so weights are quantized to 7 bits (``reduce_range``) instead."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "vnni" in flags


def quantize_int8(fp32: Path, out: Path, inputs: Sequence[np.ndarray], *,
                  input_name: str = "image", holdout: int = 2) -> dict:
    """Write the int8 graph of ``fp32`` to ``out``, calibrated on ``inputs`` (all but the last
    ``holdout``, which are kept for the check when there are enough); returns the parity
    report ``{"parity": [...], "calibration_inputs": n}``. Raises ExportError when there are
    no inputs or the int8 graph is broken (cosine < 0.9)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not inputs:
        raise ExportError("int8 quantization needs calibration inputs (baseline images); "
                          "calibrate with ort_precision int8 to build it")
    calib = list(inputs[:-holdout]) if len(inputs) > holdout + 1 else list(inputs)
    check = list(inputs[-holdout:]) if len(inputs) > holdout + 1 else list(inputs[:1])
    with tempfile.TemporaryDirectory(prefix="pasta_quant_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(input_name, calib),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=not cpu_has_vnni(),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    ref_s, q_s = ort_session(fp32), ort_session(out)
    parities = []
    for i, x in enumerate(check):
        a = ref_s.run(None, {input_name: x})[0]
        b = q_s.run(None, {input_name: x})[0]
        p = compare(f"features[{i}]", a, b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        agree = cluster_agreement(ta, tb, sample_centers(ta, k=20)) if ta.dim() == 4 else None
        parities.append(Parity(p.name, p.max_abs, p.cosine, agree))
    worst = min(p.cosine for p in parities)
    if worst < MIN_INT8_COSINE:
        out.unlink(missing_ok=True)
        raise ExportError(f"{out.name}: the int8 graph disagrees with fp32 (cosine {worst:.4f}); "
                          "not using it")
    log.info("quantized %s -> %s; %s", fp32.name, out.name, "; ".join(p.line() for p in parities))
    from dataclasses import asdict
    return {"parity": [asdict(p) for p in parities], "calibration_inputs": len(calib),
            "reference": "fp32 ONNX graph"}
