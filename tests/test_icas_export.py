"""ONNX export of the iCAS decoder matches torch numerically (ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pasta_ros.core.icas.model import ICASModel, default_arch
from pasta_ros.export.icas_decoder import export_decoder

pytest.importorskip("onnxruntime")
SIZE = 64


def tiny_arch(**kw):
    """A small decoder over a random-init EfficientNet-Lite0 at 64x64 (fast on CPU)."""
    cfg = {"layers": 1, "queries": 8, "hidden": 32, "mask_dim": 16, "ffn": 64} | kw
    return default_arch(tiny=True, input_size=(SIZE, SIZE), **cfg)



@pytest.mark.parametrize(("n_prompt", "n_ntp"), [(1, 1), (0, 3)])
def test_decoder_onnx_parity(tmp_path: Path, n_prompt: int, n_ntp: int) -> None:
    torch.manual_seed(0)
    model = ICASModel(tiny_arch(layers=2))
    rep = export_decoder(model, tmp_path / "dec.onnx", (6, 7), n_prompt=n_prompt, n_ntp=n_ntp)
    assert Path(rep.path).is_file()
    assert max(rep.max_abs_diff.values()) < 1e-4
