"""``pasta bench icas``: quality on synthetic defects over held-out textures, and decoder
latency (encoder excluded) at 518x518, against the issue's targets."""

from __future__ import annotations

import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch

from pasta_ros.bench.machine import machine
from pasta_ros.core.icas.model import ICASModel, load_icas_model
from pasta_ros.core.icas.prompting import AnomalyPrompt, NormalPrompt, score_anomaly, score_normal
from pasta_ros.core.preprocess import network_size
from pasta_ros.core.timing import median_ms
from pasta_ros.data.icas_synth import DEFECTS, HELDOUT_TEXTURES, write_benchmark
from pasta_ros.evaluation_icas import evaluate

TARGETS = {"anomaly_prompt_miou": 50.0, "normal_prompt_auroc_k4": 95.0, "decoder_ms_518": 50.0}


def write_heldout(root: Path, *, size: int = 224, n_reference: int = 8, n_test: int = 9
                  ) -> list[Path]:
    """One PASTA-layout dataset per held-out texture x defect kind (20) under ``root``."""
    roots = []
    for i, tex in enumerate(HELDOUT_TEXTURES):
        for j, kind in enumerate(DEFECTS):
            r = root / f"{tex}_{kind}"
            write_benchmark(r, tex, kind, seed=1000 + 10 * i + j, size=size,
                            n_reference=n_reference, n_test=n_test)
            roots.append(r)
    return roots


def decoder_latency(model: ICASModel, frame: tuple[int, int] = (518, 518), repeats: int = 30
                    ) -> dict:
    """Median ms per frame of everything after the encoder (GQS, decoder, S + S_mfm) for an
    anomaly prompt and a 4-shot normal prompt; and of the decoder alone in ONNX Runtime."""
    w, h = network_size(*frame, *frame, model.stride)
    c = model.arch.decoder.in_channels
    feats = torch.randn(1, c, h // model.stride, w // model.stride)
    tok = torch.randn(4, c)
    ap = AnomalyPrompt(model.arch.backbone, model.arch.input_size, tok[:1], tok[1:2])
    npr = NormalPrompt(model.arch.backbone, model.arch.input_size, tok,
                       torch.randn(4 * model.arch.decoder.queries, c))
    out = {"grid": [h // model.stride, w // model.stride], "threads": torch.get_num_threads(),
           "anomaly_prompt_ms": median_ms(lambda: score_anomaly(model, feats, ap), repeats),
           "normal_prompt_ms": median_ms(lambda: score_normal(model, feats, npr), repeats)}
    try:
        import onnxruntime as ort

        from pasta_ros.export.icas_decoder import example_inputs, export_decoder
        with tempfile.TemporaryDirectory() as tmp:
            rep = export_decoder(model, Path(tmp) / "dec.onnx", tuple(out["grid"]))
            sess = ort.InferenceSession(rep.path, providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            feed = {n: t.numpy() for n, t in zip(names, example_inputs(model, tuple(out["grid"]),
                                                                       1, 1))}
            out["onnxruntime_decoder_ms"] = median_ms(lambda: sess.run(None, feed), repeats)
    except Exception as exc:  # noqa: BLE001 - the torch numbers stand on their own
        out["onnxruntime_error"] = str(exc)
    return out


def run_bench(checkpoint: str | Path, seeds: list[int], repeats: int = 30) -> dict:
    """Quality (20 held-out categories, ``seeds``) + latency, with targets met or not."""
    model = load_icas_model(checkpoint)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        quality = evaluate(model, write_heldout(Path(tmp)), seeds)
    eval_s = time.perf_counter() - t0
    lat = decoder_latency(model, repeats=repeats)
    seg, auc = quality["segmentation"], quality["auroc"]
    miou = seg["icas_anomaly_prompt"]["miou"][0]
    k4 = auc["k4"]
    met = {"anomaly_prompt_miou>=50": miou >= TARGETS["anomaly_prompt_miou"],
           "normal_prompt_auroc_k4>=95": k4["icas"][0] >= TARGETS["normal_prompt_auroc_k4"],
           "auroc_k4_beats_patch_knn": k4["icas"][0] > k4["patch_knn"][0],
           "decoder_ms_518<=50": lat["anomaly_prompt_ms"] <= TARGETS["decoder_ms_518"]}
    return {"checkpoint": str(checkpoint), "machine": machine(),
            "heldout_textures": list(HELDOUT_TEXTURES), "eval_seconds": round(eval_s, 1),
            "quality": quality, "latency": lat, "targets_met": met}


def bench_icas(args: Namespace) -> dict:
    """``pasta bench icas``: quality on held-out textures + decoder latency at 518x518."""
    from pasta_ros.core.icas.model import default_checkpoint

    return run_bench(getattr(args, "checkpoint", None) or default_checkpoint(),
                     getattr(args, "seeds", [0, 1, 2, 3, 4]),
                     repeats=getattr(args, "repeats", 30))
