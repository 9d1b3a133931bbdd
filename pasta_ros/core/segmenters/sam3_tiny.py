"""A tiny randomly initialised SAM 3 checkpoint (model + CLIP tokenizer) for tests and the
CPU benchmark: the real ``Sam3Model`` code path, ~0.3 M parameters, no download.

The tokenizer is a genuine CLIP byte-level BPE with a byte-only vocabulary (no merges), so
any prompt tokenises; the model's vocabulary covers it.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_IMAGE_SIZE = 112  # 8 x 8 patches of 14 px
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte -> printable unicode table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def tiny_tokenizer():
    """A CLIPTokenizer with 514 tokens: 256 bytes, 256 word-final bytes, BOS (512), EOS (513)."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({_BOS: 512, _EOS: 513})
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_vision_config(image_size: int = TINY_IMAGE_SIZE):
    """A ``Sam3VisionConfig``: 32-wide ViT (2 layers, one windowed, one global) + FPN; the
    image encoder of both tiny SAM 3 models (text-prompted and point-prompted)."""
    from transformers import Sam3VisionConfig, Sam3ViTConfig

    grid = image_size // 14
    vit = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, image_size=image_size, patch_size=14,
                        window_size=grid // 2, global_attn_indexes=[1],
                        pretrain_image_size=image_size // 2,
                        rope_parameters={"rope_type": "axial", "rope_theta": 10000.0})
    sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=32,
                            backbone_feature_sizes=sizes)


def tiny_config(image_size: int = TINY_IMAGE_SIZE, num_queries: int = 12):
    """A ``Sam3Config`` with 32-wide layers: ViT (2 layers, one windowed, one global), FPN,
    1-layer CLIP text encoder, 1-layer DETR encoder/decoder, mask decoder."""
    from transformers import Sam3Config

    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return Sam3Config(
        vision_config=tiny_vision_config(image_size),
        text_config={"model_type": "clip_text_model", "vocab_size": 520, "hidden_size": 32,
                     "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32,
                     "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513},
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": num_queries},
        mask_decoder_config={"hidden_size": 32, "num_upsampling_stages": 3,
                             "num_attention_heads": 2})


def tiny_model(seed: int = 0, **config_kwargs):
    """A seeded, randomly initialised tiny ``Sam3Model`` in eval mode."""
    from transformers import Sam3Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Sam3Model(tiny_config(**config_kwargs)).eval()


def save_tiny_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """Write a loadable checkpoint folder (config.json, model.safetensors, tokenizer files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(seed).save_pretrained(str(folder))
    tiny_tokenizer().save_pretrained(str(folder))
    return folder
