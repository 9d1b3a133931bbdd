"""Export the iCAS decoder (encoder excluded) to ONNX, with an ONNX Runtime parity check.

The graph takes the encoder features, the pooled prompt tokens and the GQS cell indices
(GQS is a data-dependent loop and runs outside, in numpy/torch) and returns the class-agnostic
masks and both classifiers' probabilities; the scores of ``matching`` are cheap products of
these. Like the rest of ``pasta_ros.export``, the TorchScript exporter (``dynamo=False``) is used
and the file is valid for the feature-grid size it was exported at (recorded in the name).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.matching import class_logits
from pasta_ros.core.icas.model import ICASModel
from pasta_ros.core.icas.prompting import ICASPredictor

OPSET = 17
DECODER_BACKENDS = ("onnxruntime", "torch")
log = logging.getLogger("pasta")


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


Key = tuple[tuple[int, int], int, int]  # (feature grid (h, w), N_p, N_n)


class OrtDecoder:
    """The iCAS decoder through ONNX Runtime on the CPU, for scoring frames
    (:class:`pasta_ros.core.icas.prompting.DecoderRuntime`).

    One graph per (feature grid, N_p, N_n), exported from a copy of the model's current
    weights and parity-checked against torch (:func:`export_decoder`, atol 1e-4) by
    :meth:`prepare`: the predictor prepares it when a prompt is set, for the prompt's grid.
    A frame whose shapes have no graph yet is scored by torch (``__call__`` returns None) while
    a background thread builds one, so no frame waits for an export. On the node's 22x38 grid
    the graph runs the decoder ~2x faster than torch eager (BENCHMARKS.md, issue #10).
    ``threads``: ONNX Runtime intra-op threads (0: the process's, :mod:`pasta_ros.core.threads`).
    """

    def __init__(self, model: ICASModel, threads: int = 0) -> None:
        self.model = model
        self.threads = threads
        self._sessions: dict[Key, object] = {}
        self._building: set[Key] = set()
        self._failed: set[Key] = set()  # not retried until reset: torch scores these shapes
        self._generation = 0  # bumped by reset: a build of old weights is discarded
        self._lock = threading.Lock()

    @staticmethod
    def _key(grid: tuple[int, int], n_prompt: int, n_ntp: int) -> Key:
        return (int(grid[0]), int(grid[1])), int(n_prompt), int(n_ntp)

    def prepare(self, grid: tuple[int, int], n_prompt: int, n_ntp: int) -> None:
        """Build the graph for these shapes now (a few seconds; no-op when it exists). A
        failed export or parity check is logged and remembered, never raised: the torch
        decoder then scores these shapes (a prompt is never refused for its graph)."""
        key = self._key(grid, n_prompt, n_ntp)
        with self._lock:
            if key in self._sessions or key in self._failed:
                return
            model, generation = self.model, self._generation
        try:
            session = self._build(model, key)
        except Exception as exc:  # noqa: BLE001 - the torch decoder keeps scoring these frames
            log.warning("iCAS decoder graph for grid %s, %d/%d tokens not built (%s); the torch "
                        "decoder scores these frames", key[0], key[1], key[2], exc)
            with self._lock:
                if generation == self._generation:
                    self._failed.add(key)
            return
        with self._lock:
            if generation == self._generation:
                self._sessions[key] = session

    def ready(self, grid: tuple[int, int], n_prompt: int, n_ntp: int) -> bool:
        """True when the graph for these shapes exists."""
        with self._lock:
            return self._key(grid, n_prompt, n_ntp) in self._sessions

    def reset(self, model: ICASModel) -> None:
        """Forget every graph (``model`` has new weights); later prepares export from it."""
        with self._lock:
            self.model, self._generation = model, self._generation + 1
            self._sessions, self._failed = {}, set()

    def __call__(self, feats: torch.Tensor, prompt: torch.Tensor, ntp: torch.Tensor,
                 idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if feats.is_cuda:
            return None
        key = self._key(feats.shape[-2:], prompt.shape[1], ntp.shape[1])
        with self._lock:
            session = self._sessions.get(key)
            start = session is None and key not in self._building and key not in self._failed
            if start:
                self._building.add(key)
        if start:
            threading.Thread(target=self._build_in_background, args=(key,),
                             name="pasta-icas-export", daemon=True).start()
        if session is None:
            return None
        feed = {"feats": feats.numpy(), "ntp": ntp.numpy(), "query_idx": idx.numpy()}
        if key[1]:
            feed["prompt"] = prompt.numpy()
        masks, sem, non = session.run(None, feed)
        return torch.from_numpy(masks), torch.from_numpy(sem), torch.from_numpy(non)

    def _build_in_background(self, key: Key) -> None:
        try:
            self.prepare(*key)
        finally:
            with self._lock:
                self._building.discard(key)

    def _build(self, model: ICASModel, key: Key):
        from pasta_ros.core.threads import process_threads
        from pasta_ros.export.onnx_export import ort_session

        frozen = copy.deepcopy(model).eval()  # traced apart from the model scoring frames
        with tempfile.TemporaryDirectory(prefix="pasta_icas_decoder_") as tmp, \
                warnings.catch_warnings():
            # the tracer's notes on shape arithmetic fixed at this grid: expected, the graph is
            # per grid and parity-checked below
            warnings.simplefilter("ignore")
            path = Path(tmp) / "decoder.onnx"
            export_decoder(frozen, path, key[0], n_prompt=key[1], n_ntp=key[2])
            return ort_session(path, threads=self.threads or process_threads())


def use_decoder_backend(predictor: ICASPredictor, backend: str) -> None:
    """Score ``predictor``'s frames with ``backend``: 'onnxruntime' (an :class:`OrtDecoder`;
    a predictor on CUDA keeps the torch decoder) or 'torch'. Raises PastaError for another
    name."""
    if backend not in DECODER_BACKENDS:
        raise PastaError(f"icas decoder backend must be one of {', '.join(DECODER_BACKENDS)}, "
                         f"got {backend!r}")
    on_cpu = not next(predictor.model.decoder.parameters()).is_cuda
    if backend == "onnxruntime" and on_cpu:
        if not isinstance(predictor.runtime, OrtDecoder):
            predictor.use_runtime(OrtDecoder(predictor.model))
    else:
        predictor.use_runtime(None)
