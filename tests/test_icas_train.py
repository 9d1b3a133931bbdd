"""iCAS training: a step lowers the loss; checkpoints save, load, resume and refuse foreign
architectures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.losses import icas_loss
from pasta_ros.core.icas.model import (
    ICASModel,
    default_arch,
    load_decoder,
    load_icas_model,
    read_checkpoint,
    save_checkpoint,
)
from pasta_ros.data.icas_synth import anomaly_pair, generic_pair
from pasta_ros.training.icas_train import (
    TrainConfig,
    forward_pairs,
    make_optimizer,
    train,
    train_step,
)

SIZE = 64


def tiny_arch(**kw):
    """A small decoder over a random-init EfficientNet-Lite0 at 64x64 (fast on CPU)."""
    cfg = {"layers": 1, "queries": 8, "hidden": 32, "mask_dim": 16, "ffn": 64} | kw
    return default_arch(tiny=True, input_size=(SIZE, SIZE), **cfg)


def test_pairs_have_prompt_and_segments() -> None:
    rng = np.random.default_rng(0)
    g = generic_pair(rng, SIZE)
    assert g.semantic and g.ref_mask.any() and (g.classes == 0).sum() == 1
    assert g.segments.shape[1:] == (SIZE, SIZE) and g.segments[g.classes == 0].any()
    a = anomaly_pair(rng, SIZE, normal_prob=1.0)
    assert not a.semantic and not a.ref_mask.any() and a.segments[0].any()


def test_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = ICASModel(tiny_arch())
    rng = np.random.default_rng(1)
    pairs = [anomaly_pair(rng, SIZE, 0.0) for _ in range(2)]
    opt = make_optimizer(model, TrainConfig(lr=3e-3))

    def loss() -> float:
        with torch.no_grad():
            out, targets = forward_pairs(model, pairs)
            return float(icas_loss(out, targets)["total"])

    before = loss()
    for _ in range(3):
        train_step(model, opt, pairs)
    assert loss() < before


def test_checkpoint_save_load_and_resume(tmp_path: Path) -> None:
    arch = tiny_arch()
    ckpt = tmp_path / "icas.pt"
    cfg = TrainConfig(stage="generic", steps=2, batch=1, seed=3, save_every=1)
    assert train(cfg, ckpt, arch, progress=False)["step"] == 2
    first = read_checkpoint(ckpt)
    assert first.arch == arch and first.step == 2 and first.optimizer_state
    resumed = train(TrainConfig(stage="generic", steps=3, batch=1, seed=3), ckpt, arch,
                    progress=False)
    assert resumed["step"] == 3 and read_checkpoint(ckpt).step == 3
    # Next stage starts from the previous stage's weights, at step 0 of its own schedule.
    nxt = train(TrainConfig(stage="anomaly", steps=1, batch=1), tmp_path / "a.pt", arch,
                init=ckpt, progress=False)
    assert nxt["step"] == 1 and read_checkpoint(tmp_path / "a.pt").stage == "anomaly"
    model = load_icas_model(ckpt)
    ref = read_checkpoint(ckpt).decoder_state
    assert all(torch.equal(v, ref[k]) for k, v in model.decoder.state_dict().items())


def test_foreign_architecture_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    model = ICASModel(tiny_arch())
    other = ICASModel(tiny_arch(layers=2))
    path = save_checkpoint(tmp_path / "other.pt", other, stage="generic", step=0)
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    with pytest.raises(PastaError, match="another architecture.*layers: 2 vs 1"):
        load_decoder(model, read_checkpoint(path), str(path))
    assert all(torch.equal(v, before[k]) for k, v in model.decoder.state_dict().items())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PastaError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(PastaError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
