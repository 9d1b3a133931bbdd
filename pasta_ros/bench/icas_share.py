"""``pasta bench icas_share``: the node's iCAS vote with one encoder pass vs two, same run.

One calibrated model (synthetic steel at 910x512, the default settings, as ``bench frame``),
one pipeline, the shipped checkpoint prompted with the same 4 normal shots, and the votes below
processed frame by frame in turn (so that load from other processes hits all alike):

- ``off``: PASTA alone (the shared backbone's cost on its own);
- ``two_pass``: the vote runs its own encoder at the checkpoint's 224x224 (before);
- ``two_pass_same_res``: its own encoder at PASTA's input size (what sharing replaces);
- ``shared``: the vote scores on PASTA's backbone features of the frame (one pass);
- ``shared_pooled``: the same pooled to at most ``SHARED_MAX_CELLS`` cells (the default),
  its decoder in ONNX Runtime (the default on the CPU);
- ``shared_pooled_torch``: the same with the torch decoder (the reference path).

JSON: per vote the median ms of ``backbone``, ``icas`` and ``total``; ``icas_beyond_backbone``
= total - off total per shared vote (the target: <= 10 ms); ``vote_agree_pct``: anomaly patches of
``shared`` equal to ``two_pass_same_res`` (100 with the torch backend; the exported graph's
features differ from torch's by float noise); ``decoder_agree_pct``: anomaly patches of
``shared_pooled`` equal to ``shared_pooled_torch``; ``decoder_speedup``: the iCAS stage of
``shared_pooled_torch`` over ``shared_pooled``.
"""

from __future__ import annotations

import tempfile
from argparse import Namespace
from pathlib import Path

import numpy as np

from pasta_ros.bench.frame import FRAME, bench_config, calibrated_model

VOTES = ("off", "two_pass", "two_pass_same_res", "shared", "shared_pooled",
         "shared_pooled_torch")


def _votes(pipe, normal: list[np.ndarray]) -> dict:
    """The votes of the module doc (None for ``off``), prompted with ``normal``."""
    from pasta_ros.core.icas.prompting import ICASPredictor
    from pasta_ros.core.icas.vote import SHARED_MAX_CELLS, IcasVote
    from pasta_ros.export.icas_decoder import use_decoder_backend

    votes: dict = {"off": None}
    for name in VOTES[1:]:
        predictor = ICASPredictor.from_checkpoint()
        if name != "two_pass":
            pipe.share_icas_backbone(predictor, SHARED_MAX_CELLS if "pooled" in name else 0)
        use_decoder_backend(predictor, "torch" if name.endswith("_torch") else "onnxruntime")
        predictor.set_normal_prompt(normal)
        votes[name] = IcasVote(predictor, "combine", share=name.startswith("shared"))
    return votes


def bench_icas_share(args: Namespace) -> dict:
    """Per-frame ms of the votes of the module doc on the same frames."""
    from pasta_ros.bench.machine import machine
    from pasta_ros.pipeline import PastaPipeline, icas_pipeline_config

    cfg = bench_config(args).replace(input_width=FRAME[0], input_height=FRAME[1])
    if getattr(args, "fused_graph", None) is None:  # as the node runs with a shared vote
        cfg = icas_pipeline_config(cfg, True, True)
    repeats = max(1, int(args.repeats))
    with tempfile.TemporaryDirectory(prefix="pasta_bench_icas_share_") as tmp:
        model_dir, frames = calibrated_model(cfg, Path(tmp), n_baseline=getattr(
            args, "n_baseline", 12))
        pipe = PastaPipeline.load(model_dir, cfg)
        votes = _votes(pipe, frames["reference"][:4])
        test = frames["test"]
        for vote in votes.values():
            pipe.process(test[0], icas=vote)
        samples = {name: {"backbone": [], "icas": [], "total": []} for name in VOTES}
        agree = cells = same_decoder = 0
        for i in range(repeats):
            frame = test[i % len(test)]
            out = {name: pipe.process(frame, icas=vote) for name, vote in votes.items()}
            for name, r in out.items():
                for key in samples[name]:
                    samples[name][key].append(r.timings.get(key, 0.0))
            agree += int((out["shared"].anomaly_patches
                          == out["two_pass_same_res"].anomaly_patches).sum())
            cells += out["shared"].anomaly_patches.size
            same_decoder += 100.0 * float((out["shared_pooled"].anomaly_patches
                                           == out["shared_pooled_torch"].anomaly_patches).mean())
    med = {name: {k: round(float(np.median(v)), 2) for k, v in s.items()} for name, s in
           samples.items()}
    return {"bench": "icas_share", "frame": f"{FRAME[0]}x{FRAME[1]}",
            "network_input": "x".join(map(str, pipe.extractor.size_for(test[0]))),
            "backend": pipe.backend, "device": cfg.device, "votes": med,
            "icas_beyond_backbone": {name: round(med[name]["total"] - med["off"]["total"], 2)
                                     for name in VOTES[3:]},
            "saved_vs_two_pass_same_res": round(med["two_pass_same_res"]["total"]
                                                - med["shared"]["total"], 2),
            "vote_agree_pct": round(100.0 * agree / max(cells, 1), 3),
            "decoder_agree_pct": round(same_decoder / repeats, 3),
            "decoder_speedup": round(med["shared_pooled_torch"]["icas"]
                                     / max(med["shared_pooled"]["icas"], 1e-9), 2),
            "repeats": repeats, **machine()}
