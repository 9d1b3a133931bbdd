"""SAM 3 (transformers ``Sam3Model``) exported in three ONNX parts, prompt precomputed.

Parts and their I/O (S = the model's square input side, T = 32 prompt tokens, D = DETR width,
F = FPN width, Q = queries):

- ``sam3_image_encoder.onnx``: pixel_values ``(1, 3, S, S) float32`` -> fpn0, fpn1, fpn2
  ``(1, F, 4g, 4g)``, ``(1, F, 2g, 2g)``, ``(1, F, g, g)`` with g = S / 14;
- ``sam3_text_encoder.onnx``: input_ids, attention_mask ``(1, T) int64`` -> text_features
  ``(1, T, D)`` (only needed to change the prompt on the robot);
- ``sam3_decoder.onnx`` (DETR encoder + decoder, scoring, mask decoder): fpn0..2,
  text_features, text_mask -> pred_masks ``(1, Q, 4g, 4g)`` logits, pred_logits ``(1, Q)``,
  presence_logits ``(1, 1)``, pred_boxes ``(1, Q, 4)`` xyxy in [0, 1];
- ``sam3_prompt.npz``: text_features and text_mask of the fixed prompt, computed once here.

The known blockers of the original ``sam3`` package (RoPE through ``view_as_complex``, shape
asserts) do not arise: transformers' SAM 3 applies RoPE in real arithmetic (cos/sin and a
pairwise rotation), and the RoPE tables, window partition and sine position encodings are
evaluated at the export resolution, i.e. baked for a fixed S (the model's config image size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pasta_ros.export.onnx_export import (
    DEFAULT_OPSET,
    ExportReport,
    Parity,
    compare,
    export_onnx,
    ort_session,
)

log = logging.getLogger("pasta.export")

PARTS = ("sam3_image_encoder", "sam3_text_encoder", "sam3_decoder")
DECODER_OUTPUTS = ("pred_masks", "pred_logits", "presence_logits", "pred_boxes")


class ImageEncoderPart(nn.Module):
    """pixel_values -> the three FPN levels the decoder uses (the 0.5x level is unused)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.vision_encoder(pixel_values).fpn_hidden_states[:-1])


class TextEncoderPart(nn.Module):
    """input_ids, attention_mask -> projected text features ``(1, T, D)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids,
                                            attention_mask=attention_mask).pooler_output


class DecoderPart(nn.Module):
    """FPN levels + prompt features -> masks, scores, presence, boxes (see module doc)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fpn0: torch.Tensor, fpn1: torch.Tensor, fpn2: torch.Tensor,
                text_features: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        fpn = (fpn0, fpn1, fpn2)
        encode = self.model.vision_encoder.neck.position_encoding
        pos = tuple(encode(f.shape, f.device, f.dtype) for f in fpn)
        # The model drops the last FPN level itself; pass a placeholder in its slot.
        vision = Sam3VisionEncoderOutput(fpn_hidden_states=(*fpn, fpn2),
                                         fpn_position_encoding=(*pos, pos[-1]))
        out = self.model(vision_embeds=vision, attention_mask=text_mask,
                         text_embeds=BaseModelOutputWithPooling(pooler_output=text_features))
        return out.pred_masks, out.pred_logits, out.presence_logits, out.pred_boxes


@dataclass(frozen=True)
class Sam3Inputs:
    """Example inputs at the export resolution: a seeded image and the tokenised prompt."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def example_inputs(model: nn.Module, tokenizer, prompt: str, seed: int = 0) -> Sam3Inputs:
    from pasta_ros.core.segmenters.sam3 import TEXT_LENGTH

    side = int(model.config.vision_config.image_size)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, side, side, generator=gen) * 2 - 1  # mean/std 0.5 range
    tok = tokenizer([prompt], padding="max_length", max_length=TEXT_LENGTH, truncation=True,
                    return_tensors="pt")
    return Sam3Inputs(pixels, tok["input_ids"].long(), tok["attention_mask"].long())


def _check(path: Path, names: list[str], args: tuple, ref: tuple) -> list[Parity]:
    sess = ort_session(path)
    feeds = {n: a.numpy() for n, a in zip(names, args)}
    outs = sess.run(None, feeds)
    names_out = [o.name for o in sess.get_outputs()]
    return [compare(f"{path.stem}.{n}", r.numpy(), o) for n, r, o in zip(names_out, ref, outs)]


@torch.inference_mode()
def export_sam3(model: nn.Module, tokenizer, prompt: str, out_dir: str | Path, *,
                opset: int = DEFAULT_OPSET) -> list[ExportReport]:
    """Export the three parts and the precomputed prompt to ``out_dir``; compare each part's
    ONNX Runtime outputs with torch and return one report per part."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    ex = example_inputs(model, tokenizer, prompt)
    img, txt, dec = ImageEncoderPart(model), TextEncoderPart(model), DecoderPart(model)
    fpn = img(ex.pixel_values)
    text = txt(ex.input_ids, ex.attention_mask)
    dec_ref = dec(*fpn, text, ex.attention_mask)
    side = int(ex.pixel_values.shape[-1])
    np.savez(out / "sam3_prompt.npz", text_features=text.numpy(),
             text_mask=ex.attention_mask.numpy(), prompt=np.array(prompt))
    specs = [
        ("sam3_image_encoder", img, (ex.pixel_values,), ["pixel_values"],
         ["fpn0", "fpn1", "fpn2"], fpn),
        ("sam3_text_encoder", txt, (ex.input_ids, ex.attention_mask),
         ["input_ids", "attention_mask"], ["text_features"], (text,)),
        ("sam3_decoder", dec, (*fpn, text, ex.attention_mask),
         ["fpn0", "fpn1", "fpn2", "text_features", "text_mask"], list(DECODER_OUTPUTS),
         dec_ref),
    ]
    reports = []
    for stem, module, args, ins, outs, ref in specs:
        path = export_onnx(module, args, out / f"{stem}.onnx", input_names=ins,
                           output_names=outs, opset=opset)
        parity = _check(path, ins, args, tuple(ref))
        for p in parity:
            log.info("%s", p.line())
        reports.append(ExportReport(str(path), (side, side), opset, tuple(parity)))
    return reports


class Sam3OnnxParts:
    """The exported parts in ONNX Runtime, prompt features loaded from ``sam3_prompt.npz``:
    ``run(pixel_values)`` -> dict of the decoder outputs (numpy)."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        folder = Path(folder)
        self.image = ort_session(folder / "sam3_image_encoder.onnx", threads=threads)
        self.decoder = ort_session(folder / "sam3_decoder.onnx", threads=threads)
        self.text_path = folder / "sam3_text_encoder.onnx"
        with np.load(folder / "sam3_prompt.npz") as z:
            self.text_features, self.text_mask = z["text_features"], z["text_mask"]

    def encode_image(self, pixel_values: np.ndarray) -> list[np.ndarray]:
        return self.image.run(None, {"pixel_values": pixel_values})

    def decode(self, fpn: list[np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {"fpn0": fpn[0], "fpn1": fpn[1], "fpn2": fpn[2],
                 "text_features": self.text_features, "text_mask": self.text_mask}
        return dict(zip(DECODER_OUTPUTS, self.decoder.run(None, feeds)))

    def run(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        return self.decode(self.encode_image(pixel_values))
