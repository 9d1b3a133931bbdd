"""Point-prompted SAM 3 (transformers ``Sam3TrackerModel``, SAM 3's interactive "PVS" path),
from a local checkpoint: WaW's object masks from point prompts.

WaW (PASTA §III-B, Fig. 4) prompts SAM with points on the vegetation and takes one mask per
point. Per frame:

1. resize the frame to the model's square input, normalise, run the image encoder once;
2. every point is its own prompt (one positive click), decoded in chunks of
   ``points_per_batch`` against the cached image embedding; of SAM's three candidate masks
   the one with the highest predicted IoU is kept, and its score is that predicted IoU;
3. masks whose object-score logit is negative (SAM: "no object here") are dropped;
4. masks are upsampled to the frame (bilinear on the logits, > 0), limited to the
   ``region`` the points came from (the ExG vegetation mask), duplicates removed by mask NMS
   (many points on one plant give one mask), then painted best first so every pixel has one
   owner; instances under ``min_area`` pixels are dropped, ids renumbered 1..N.

Step 4's limit to the region is this project's choice: ExG already says which pixels are
vegetation, SAM says which plant they belong to. The checkpoint is the Hugging Face snapshot of
``facebook/sam3`` (its tracker part) or a ``Sam3TrackerModel`` folder; transformers is imported
lazily. Only the tiny random configuration of :func:`tiny_tracker_model` has run here.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.segmenters.sam3 import (
    SAM3_MEAN,
    SAM3_STD,
    checkpoint_folder,
    mask_nms,
    paint_disjoint,
    read_preprocessor,
    square_pixel_values,
)
from pasta_ros.core.segmenters.sam3_tiny import TINY_IMAGE_SIZE, tiny_vision_config


class Sam3PointSegmenter:
    """SAM 3's point-prompted decoder as WaW's point segmenter (see the module docstring).

    ``segment_points(image, region, points)``: image ``(H, W, 3) uint8`` RGB, region
    ``(H, W) bool``, points ``(P, 2) int64`` (x, y) pixels. Returns ``(H, W) int32`` ids.
    """

    name = "sam3"

    def __init__(self, model, *, min_area: int = 150, nms_iou: float = 0.5,
                 points_per_batch: int = 64, device: str | torch.device = "cpu",
                 mean: tuple = SAM3_MEAN, std: tuple = SAM3_STD,
                 image_size: int | None = None) -> None:
        if not 0.0 <= nms_iou <= 1.0:
            raise PastaError(f"sam3 nms_iou must be in [0, 1], got {nms_iou}")
        if points_per_batch < 1:
            raise PastaError(f"points_per_batch must be >= 1, got {points_per_batch}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.min_area = int(min_area)
        self.nms_iou = float(nms_iou)
        self.points_per_batch = int(points_per_batch)
        self.image_size = int(image_size or model.config.prompt_encoder_config.image_size)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> Sam3PointSegmenter:
        """Load ``Sam3TrackerModel`` from a local folder (no download)."""
        folder = checkpoint_folder(path)
        from transformers import Sam3TrackerModel

        from pasta_ros.core.backbones.hf import _quiet_transformers

        try:
            with _quiet_transformers():
                model = Sam3TrackerModel.from_pretrained(str(folder), local_files_only=True,
                                                         dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise PastaError(f"cannot load SAM 3's point-prompted model from {folder}: {exc}"
                             ) from exc
        mean, std, size = read_preprocessor(folder)
        return cls(model, **{"mean": mean, "std": std, "image_size": size, **kwargs})

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3) uint8`` -> ``(1, 3, S, S) float32`` normalised, S = model input side."""
        return square_pixel_values(image, self.image_size, self._mean, self._std, self.device)

    @torch.inference_mode()
    def point_masks(self, image: np.ndarray, points: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """One mask per point: ``(P', h, w) float32`` logits at the decoder's resolution and
        ``(P',) float32`` scores (predicted IoU), for the P' points SAM finds an object at."""
        h, w = image.shape[:2]
        s = self.image_size
        t0 = time.perf_counter()
        embeddings = self.model.get_image_embeddings(self.pixel_values(image))
        t1 = time.perf_counter()
        scale = torch.tensor([s / w, s / h], dtype=torch.float32)
        logits, scores = [], []
        for start in range(0, len(points), self.points_per_batch):
            chunk = torch.from_numpy(points[start:start + self.points_per_batch]).float()
            prompts = (chunk * scale)[None, :, None, :].to(self.device)  # (1, p, 1, 2)
            labels = torch.ones(prompts.shape[:3], dtype=torch.int32, device=self.device)
            out = self.model(image_embeddings=embeddings, input_points=prompts,
                             input_labels=labels, multimask_output=True)
            iou = out.iou_scores[0]  # (p, 3)
            best = iou.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            present = out.object_score_logits[0, :, 0] > 0
            logits.append(out.pred_masks[0, rows, best][present].float().cpu())
            scores.append(iou[rows, best][present].float().cpu())
        self.last_timings = {"image_encoder": (t1 - t0) * 1e3,
                             "decoder": (time.perf_counter() - t1) * 1e3}
        if not logits:
            return np.zeros((0, 1, 1), np.float32), np.zeros(0, np.float32)
        return torch.cat(logits).numpy(), torch.cat(scores).numpy()

    def segment_points(self, image: np.ndarray, region: np.ndarray,
                       points: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8``, ``(H, W) bool``, ``(P, 2) int64`` -> ``(H, W) int32`` ids."""
        h, w = image.shape[:2]
        if not len(points):
            return np.zeros((h, w), np.int32)
        logits, scores = self.point_masks(image, np.asarray(points, np.int64))
        if not len(scores):
            return np.zeros((h, w), np.int32)
        masks = np.stack([(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 0) & region
                          for m in logits])
        keep = mask_nms(torch.from_numpy(masks), torch.from_numpy(scores), self.nms_iou)
        return paint_disjoint(masks[keep.numpy()], self.min_area)


def tiny_tracker_config(image_size: int = TINY_IMAGE_SIZE):
    """A ``Sam3TrackerConfig`` with 32-wide layers (the ViT of ``sam3_tiny``, a 2-layer
    two-way mask decoder), ~0.13 M parameters: the real code path for tests."""
    from transformers import Sam3TrackerConfig

    return Sam3TrackerConfig(
        vision_config=tiny_vision_config(image_size),
        prompt_encoder_config={"hidden_size": 32, "image_size": image_size, "patch_size": 14},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2,
                             "iou_head_hidden_dim": 32})


def save_tiny_tracker_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """Write a seeded, randomly initialised tiny ``Sam3TrackerModel`` folder (config.json,
    model.safetensors) that :meth:`Sam3PointSegmenter.from_pretrained` loads."""
    from transformers import Sam3TrackerModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Sam3TrackerModel(tiny_tracker_config()).eval().save_pretrained(str(folder))
    return folder
