"""General-to-Specific training (§3.3): ``generic`` stage on procedural multi-object scenes,
then ``anomaly`` stage on synthetic defects, both over the training textures only.

Resumable: the checkpoint holds the architecture, decoder weights, optimizer state and step;
training data for step ``i`` come from ``default_rng([seed, stage, i])`` so a resumed run sees
the same samples it would have seen without the interruption.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.losses import LossWeights, Target, icas_loss
from pasta_ros.core.icas.mask_pooling import prompt_tokens
from pasta_ros.core.icas.model import (
    ICASArch,
    ICASModel,
    load_decoder,
    read_checkpoint,
    save_checkpoint,
)
from pasta_ros.data.icas_synth import Pair, anomaly_pair, generic_pair

log = logging.getLogger("pasta.icas.train")
STAGES = ("generic", "anomaly")


@dataclass(frozen=True)
class TrainConfig:
    """stage: generic | anomaly. steps: optimizer steps in total (a resumed run continues to
    it). batch: pairs per step. lr / weight_decay: AdamW (paper: 1e-4, 0.05). seed: data and
    init seed. save_every: steps between checkpoints. time_limit: seconds of wall clock after
    which a checkpoint is written and training stops (0 = none)."""

    stage: str = "generic"
    steps: int = 2000
    batch: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.05
    seed: int = 0
    save_every: int = 50
    time_limit: float = 0.0
    normal_prob: float = 0.35

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise PastaError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.steps < 1 or self.batch < 1:
            raise PastaError("steps and batch must be >= 1")


def sample_batch(cfg: TrainConfig, size: int, step: int) -> list[Pair]:
    """The ``cfg.batch`` pairs of one step: all semantic or all normal-prompt (one token
    layout per batch)."""
    rng = np.random.default_rng([cfg.seed, STAGES.index(cfg.stage), step])
    if cfg.stage == "generic":
        return [generic_pair(rng, size) for _ in range(cfg.batch)]
    normal = rng.random() < cfg.normal_prob
    return [anomaly_pair(rng, size, 1.0 if normal else 0.0) for _ in range(cfg.batch)]


def _targets(pairs: list[Pair], size: tuple[int, int]) -> list[Target]:
    out = []
    for p in pairs:
        m = torch.from_numpy(p.segments.astype(np.float32)).unsqueeze(0)
        m = F.adaptive_avg_pool2d(m, size)[0]
        out.append(Target(m, torch.from_numpy(p.classes).long(), p.semantic))
    return out


def forward_pairs(model: ICASModel, pairs: list[Pair]):
    """Encode references and targets in one encoder call, pool prompts, run the decoder.
    Returns ``(DecoderOutput, targets)``."""
    n = len(pairs)
    feats = model.encode([p.ref for p in pairs] + [p.target for p in pairs])
    ref_f, tgt_f = feats[:n], feats[n:]
    masks = torch.from_numpy(np.stack([p.ref_mask for p in pairs])).to(feats.device)
    q_p, q_ntp = prompt_tokens(ref_f, masks)
    semantic = pairs[0].semantic
    prompt = q_p[:, None] if semantic else q_p.new_zeros(n, 0, q_p.shape[-1])
    out = model.decoder(tgt_f, prompt, q_ntp[:, None], model.queries(tgt_f))
    return out, _targets(pairs, tuple(out.mask_logits.shape[-2:]))


def train_step(model: ICASModel, opt: torch.optim.Optimizer, pairs: list[Pair],
               weights: LossWeights = LossWeights()) -> dict[str, float]:
    """One optimizer step on ``pairs``; returns the loss terms as floats."""
    model.decoder.train()
    out, targets = forward_pairs(model, pairs)
    terms = icas_loss(out, targets, weights)
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), 1.0)
    opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def make_optimizer(model: ICASModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.decoder.parameters(), lr=cfg.lr,
                             weight_decay=cfg.weight_decay)


def _start(cfg: TrainConfig, out: Path, arch: ICASArch, init: Path | None
           ) -> tuple[ICASModel, torch.optim.Optimizer, int, list]:
    """Resume ``out`` when it holds this stage, else start from ``init`` (or scratch)."""
    torch.manual_seed(cfg.seed)
    if out.is_file():
        ckpt = read_checkpoint(out)
        if ckpt.stage == cfg.stage:
            model = ICASModel(ckpt.arch)
            load_decoder(model, ckpt, str(out))
            opt = make_optimizer(model, cfg)
            if ckpt.optimizer_state:
                opt.load_state_dict(ckpt.optimizer_state)
            log.info("resuming %s stage from %s at step %d", cfg.stage, out, ckpt.step)
            return model, opt, ckpt.step, ckpt.meta.get("history", [])
        if init is None:
            init = out  # the next stage continues from the previous stage's weights
    if init is not None:
        ckpt = read_checkpoint(init)
        model = ICASModel(ckpt.arch)
        load_decoder(model, ckpt, str(init))
        hist = ckpt.meta.get("history", [])
        log.info("starting %s stage from %s (%s stage, step %d)", cfg.stage, init, ckpt.stage,
                 ckpt.step)
        return model, make_optimizer(model, cfg), 0, hist
    model = ICASModel(arch)
    return model, make_optimizer(model, cfg), 0, []


def train(cfg: TrainConfig, out: str | Path, arch: ICASArch, *, init: str | Path | None = None,
          progress: bool = True) -> dict:
    """Run (or resume) one stage up to ``cfg.steps``; checkpoints to ``out``.

    Returns a summary: stage, step reached, mean loss of the last 50 steps, seconds, whether it
    stopped on the time limit.
    """
    from tqdm import tqdm

    out = Path(out)
    model, opt, step, history = _start(cfg, out, arch, Path(init) if init else None)
    size = model.arch.input_size[0]
    t0, losses, stopped = time.monotonic(), [], False
    meta = lambda: {"train": asdict(cfg), "history": history}  # noqa: E731
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"icas {cfg.stage}")
    while step < cfg.steps:
        terms = train_step(model, opt, sample_batch(cfg, size, step))
        step += 1
        losses.append(terms["total"])
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if step % 10 == 0:
            history.append([cfg.stage, step, float(np.mean(losses[-10:]))])
        timed_out = cfg.time_limit > 0 and time.monotonic() - t0 > cfg.time_limit
        if step % cfg.save_every == 0 or step == cfg.steps or timed_out:
            save_checkpoint(out, model, stage=cfg.stage, step=step, optimizer=opt, meta=meta())
        if timed_out:
            stopped = True
            break
    bar.close()
    save_checkpoint(out, model, stage=cfg.stage, step=step, optimizer=opt, meta=meta())
    return {"stage": cfg.stage, "step": step, "steps": cfg.steps, "checkpoint": str(out),
            "loss_last50": float(np.mean(losses[-50:])) if losses else float("nan"),
            "seconds": round(time.monotonic() - t0, 1), "stopped_on_time_limit": stopped}
