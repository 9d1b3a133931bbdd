"""Text-prompted SAM 3 instance segmenter (transformers ``Sam3Model``), from a local checkpoint.

PASTA's Phase 3 prompts SAM 3 with one generic phrase ("objects on the conveyor belt"). The
phrase never changes, so its text embedding is computed once and reused: per frame only the
image encoder and the DETR/mask decoder run. Per frame:

1. resize the frame to the model's square input, normalise, run the image encoder;
2. decode queries against the cached prompt embedding; score = sigmoid(logit) x
   sigmoid(presence), queries under ``score_threshold`` are dropped;
3. mask NMS (IoU of the binarised low-resolution masks) removes duplicates;
4. survivors are upsampled to the frame and painted in ascending score order, so every pixel
   belongs to the most confident mask covering it (disjoint by construction);
5. instances owning fewer than ``min_area`` pixels are dropped, ids renumbered 1..N.

transformers is imported lazily; a checkpoint folder needs ``config.json`` + weights and the
CLIP tokenizer files (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pasta_ros.core.errors import PastaError

DEFAULT_PROMPT = "objects on the conveyor belt"
SAM3_MEAN = (0.5, 0.5, 0.5)  # Sam3ImageProcessor: IMAGENET_STANDARD_MEAN / STD
SAM3_STD = (0.5, 0.5, 0.5)
TEXT_LENGTH = 32  # Sam3Processor pads prompts to 32 tokens


@dataclass
class Sam3Detections:
    """Kept queries of one frame, best first: scores ``(N,) float32``, mask_probs
    ``(N, h, w) float32`` sigmoid probabilities at the model's mask resolution, boxes
    ``(N, 4) float32`` xyxy in [0, 1] of the frame."""

    scores: np.ndarray
    mask_probs: np.ndarray
    boxes: np.ndarray


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on binary masks. masks ``(N, h, w)`` bool, scores ``(N,)``. Returns the kept
    indices ``(M,) int64`` in descending score order."""
    if masks.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True)
    flat = masks[order].reshape(len(order), -1).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1.0)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i] or area[i] == 0:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def paint_disjoint(masks: np.ndarray, min_area: int) -> np.ndarray:
    """``(N, H, W)`` bool masks, best first -> ``(H, W) int32`` ids 1..M: each pixel goes to
    the first (most confident) mask that covers it; instances owning fewer than ``min_area``
    pixels are dropped and the rest renumbered in score order."""
    n, h, w = masks.shape
    ids = np.zeros((h, w), np.int32)
    for i in range(n - 1, -1, -1):  # ascending score: later (better) masks overwrite
        ids[masks[i]] = i + 1
    areas = np.bincount(ids.ravel(), minlength=n + 1)
    keep = areas >= max(min_area, 1)
    keep[0] = False
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[ids]


def checkpoint_folder(path: str | Path, also: str = "") -> Path:
    """The checkpoint folder ``path`` (``~`` expanded); PastaError naming what a Hugging Face
    snapshot of facebook/sam3 holds when it has no ``config.json``."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        extra = f" and {also}" if also else ""
        raise PastaError(f"SAM 3 checkpoint not found: {folder} needs config.json, the "
                         f"weights (*.safetensors){extra}, as in a Hugging Face snapshot of "
                         "facebook/sam3")
    return folder


def square_pixel_values(image: np.ndarray, side: int, mean: torch.Tensor, std: torch.Tensor,
                        device: torch.device) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(1, 3, side, side) float32``: resized (bilinear), scaled to
    [0, 1] and normalised by ``(1, 3, 1, 1)`` mean / std, on ``device``."""
    resized = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].float().div_(255.0)
    return ((x - mean) / std).to(device)


def read_preprocessor(folder: Path) -> tuple[tuple, tuple, int | None]:
    """mean, std and square size from ``preprocessor_config.json`` or ``processor_config.json``
    (the facebook/sam3 snapshot has the latter); SAM 3's defaults if neither exists."""
    f = next((folder / n for n in ("preprocessor_config.json", "processor_config.json")
              if (folder / n).is_file()), None)
    if f is None:
        return SAM3_MEAN, SAM3_STD, None
    cfg = json.loads(f.read_text())
    cfg = cfg.get("image_processor", cfg)
    size = cfg.get("size", {})
    side = size.get("height") if isinstance(size, dict) else size
    return (tuple(cfg.get("image_mean", SAM3_MEAN)), tuple(cfg.get("image_std", SAM3_STD)),
            int(side) if side else None)


class Sam3Segmenter:
    """SAM 3 with a fixed text prompt as a PASTA segmenter (see the module docstring).

    ``segment(image, cluster_map)``: image ``(H, W, 3) uint8`` RGB; cluster_map ignored.
    Returns ``(H, W) int32`` instance ids (0 = none). ``last_timings`` holds the per-part
    milliseconds of the last frame (text_encoder appears only when it ran).
    """

    name = "sam3"

    def __init__(self, model, tokenizer, prompt: str = DEFAULT_PROMPT, *,
                 score_threshold: float = 0.5, mask_threshold: float = 0.5,
                 nms_iou: float = 0.5, min_area: int = 150, device: str | torch.device = "cpu",
                 mean: tuple = SAM3_MEAN, std: tuple = SAM3_STD,
                 image_size: int | None = None) -> None:
        if not prompt.strip():
            raise PastaError("the SAM 3 prompt is empty; give a phrase such as "
                             f"'{DEFAULT_PROMPT}'")
        for label, v in (("score_threshold", score_threshold),
                         ("mask_threshold", mask_threshold), ("nms_iou", nms_iou)):
            if not 0.0 <= v <= 1.0:
                raise PastaError(f"sam3 {label} must be in [0, 1], got {v}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.nms_iou = float(nms_iou)
        self.min_area = int(min_area)
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._prompt_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._text_ms: float | None = None  # text-encoder time, reported with the next frame
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, prompt: str = DEFAULT_PROMPT,
                        **kwargs) -> Sam3Segmenter:
        """Load ``Sam3Model`` and its tokenizer from a local folder (no download)."""
        folder = checkpoint_folder(path, "the tokenizer files")
        from transformers import AutoTokenizer, Sam3Model

        from pasta_ros.core.backbones.hf import _quiet_transformers

        try:
            with _quiet_transformers():
                model = Sam3Model.from_pretrained(str(folder), local_files_only=True,
                                                  dtype=torch.float32)
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise PastaError(f"cannot load SAM 3 from {folder}: {exc}") from exc
        mean, std, size = read_preprocessor(folder)
        kwargs = {"mean": mean, "std": std, "image_size": size, **kwargs}
        return cls(model, tokenizer, prompt, **kwargs)

    @torch.inference_mode()
    def prompt_embedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``((1, T, D) float32, (1, T) int64)``: the projected prompt tokens and their mask,
        computed on first use and cached (the text encoder runs once per segmenter)."""
        if self._prompt_cache is None:
            t0 = time.perf_counter()
            tok = self.tokenizer([self.prompt], padding="max_length", max_length=TEXT_LENGTH,
                                 truncation=True, return_tensors="pt")
            ids = tok["input_ids"].to(self.device)
            mask = tok["attention_mask"].to(self.device)
            feats = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            self._prompt_cache = (feats, mask)
            self._text_ms = (time.perf_counter() - t0) * 1e3
        return self._prompt_cache

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3) uint8`` -> ``(1, 3, S, S) float32`` normalised, S = model input side."""
        return square_pixel_values(image, self.image_size, self._mean, self._std, self.device)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> Sam3Detections:
        """Score-thresholded, NMS-filtered queries of one ``(H, W, 3) uint8`` frame."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        text, text_mask = self.prompt_embedding()
        timings = {} if self._text_ms is None else {"text_encoder": self._text_ms}
        self._text_ms = None
        t0 = time.perf_counter()
        vision = self.model.get_vision_features(pixel_values=self.pixel_values(image))
        t1 = time.perf_counter()
        out = self.model(vision_embeds=vision, attention_mask=text_mask,
                         text_embeds=BaseModelOutputWithPooling(pooler_output=text))
        scores = out.pred_logits[0].sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits[0].sigmoid()
        keep = torch.nonzero(scores > self.score_threshold).flatten()
        probs = out.pred_masks[0, keep].float().sigmoid()
        best = mask_nms((probs > self.mask_threshold).cpu(), scores[keep].cpu(), self.nms_iou)
        order = keep[best.to(keep.device)]
        t2 = time.perf_counter()
        timings.update(image_encoder=(t1 - t0) * 1e3, decoder=(t2 - t1) * 1e3)
        self.last_timings = timings
        return Sam3Detections(scores[order].float().cpu().numpy(),
                              probs[best.to(probs.device)].cpu().numpy(),
                              out.pred_boxes[0, order].float().cpu().numpy())

    def segment(self, image: np.ndarray, cluster_map: torch.Tensor | None = None) -> np.ndarray:
        """``(H, W, 3) uint8`` -> ``(H, W) int32`` disjoint instance ids (see class doc)."""
        det = self.detect(image)
        h, w = image.shape[:2]
        if len(det.scores) == 0:
            return np.zeros((h, w), np.int32)
        # Probabilities upsampled bilinearly, then binarised (as Sam3Processor does).
        up = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) > self.mask_threshold
              for p in det.mask_probs]
        return paint_disjoint(np.stack(up), self.min_area)
