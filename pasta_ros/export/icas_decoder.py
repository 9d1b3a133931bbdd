"""Export the iCAS decoder (encoder excluded) to ONNX, with an ONNX Runtime parity check.

The graph takes the encoder features, the pooled prompt tokens and the GQS cell indices
(GQS is a data-dependent loop and runs outside, in numpy/torch) and returns the class-agnostic
masks and both classifiers' probabilities; the scores of ``matching`` are cheap products of
these. Like the rest of ``pasta_ros.export``, the TorchScript exporter (``dynamo=False``) is used
and the file is valid for the feature-grid size it was exported at (recorded in the name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.matching import class_logits
from pasta_ros.core.icas.model import ICASModel

OPSET = 17


class DecoderExport(nn.Module):
    """``(feats, [prompt,] ntp, query_idx) -> (masks, sem_probs, ntp_probs)``.

    feats ``(1, C, h, w)``; prompt ``(1, N_p, C)`` (absent when ``n_prompt == 0``: normal
    prompting); ntp ``(1, N_n, C)``; query_idx ``(1, K) int64``. masks ``(1, K, 2h, 2w)`` in
    [0, 1]; sem_probs, ntp_probs ``(1, K, 3)`` softmax over (target/fg, non-target, bg).
    """

    def __init__(self, model: ICASModel, n_prompt: int) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.n_prompt = n_prompt

    def forward(self, feats: torch.Tensor, *rest: torch.Tensor):
        if self.n_prompt:
            prompt, ntp, idx = rest
        else:
            (ntp, idx), prompt = rest, feats.new_zeros(feats.shape[0], 0, feats.shape[1])
        out = self.decoder(feats, prompt, ntp, idx)
        sem, non = class_logits(out)
        return out.mask_logits.sigmoid(), sem.softmax(-1), non.softmax(-1)


@dataclass(frozen=True)
class ExportReport:
    path: str
    grid: tuple[int, int]
    n_prompt: int
    n_ntp: int
    max_abs_diff: dict

    def to_json(self) -> dict:
        return asdict(self)


def example_inputs(model: ICASModel, grid: tuple[int, int], n_prompt: int, n_ntp: int,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random features of the export grid ``(h, w)`` and matching tokens / GQS indices."""
    g = torch.Generator().manual_seed(seed)
    c = model.arch.decoder.in_channels
    feats = torch.randn(1, c, *grid, generator=g)
    idx = model.queries(feats)
    if idx is None:
        idx = torch.zeros(1, model.arch.decoder.queries, dtype=torch.long)
    ntp = torch.randn(1, n_ntp, c, generator=g)
    if n_prompt:
        return feats, torch.randn(1, n_prompt, c, generator=g), ntp, idx
    return feats, ntp, idx


def export_decoder(model: ICASModel, path: str | Path, grid: tuple[int, int], *,
                   n_prompt: int = 1, n_ntp: int = 1, atol: float = 1e-4) -> ExportReport:
    """Write the decoder graph for feature grid ``(h, w)`` and check it against torch with
    ONNX Runtime on fresh random inputs. Raises PastaError when outputs differ by > atol."""
    import onnx
    import onnxruntime as ort

    if n_ntp < 1:
        raise PastaError("n_ntp must be >= 1 (the non-target prompt is always present)")
    wrapper = DecoderExport(model.eval(), n_prompt).eval()
    inputs = example_inputs(model, grid, n_prompt, n_ntp)
    names = ["feats", *(["prompt"] if n_prompt else []), "ntp", "query_idx"]
    outs = ["masks", "sem_probs", "ntp_probs"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, inputs, str(path), input_names=names, output_names=outs,
                          opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path))
    check = example_inputs(model, grid, n_prompt, n_ntp, seed=1)
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(*check)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(outs, {n: t.numpy() for n, t in zip(names, check)})
    diffs = {n: float(np.abs(a - b).max()) for n, a, b in zip(outs, ref, got)}
    if max(diffs.values()) > atol:
        raise PastaError(f"ONNX Runtime output differs from torch by {diffs} (atol {atol})")
    return ExportReport(str(path), tuple(grid), n_prompt, n_ntp, diffs)
