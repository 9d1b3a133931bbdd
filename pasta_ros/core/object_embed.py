"""Object-level embeddings: one feature vector per instance from a masked crop.

Each instance's bounding box (padded by ``pad`` of its size, made square) is cut from the
image, pixels outside the instance are set to a neutral grey (so the embedding describes the
object, not its surroundings), the crop is resized to ``size x size`` and run through the
registry backbone; the feature grid is averaged over the instance's cells and L2-normalised.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage

from pasta_ros.core.features import FeatureExtractor

NEUTRAL_RGB = (124, 116, 104)  # ImageNet mean: ~0 after the backbone's normalisation


def square_box(x0: int, y0: int, x1: int, y1: int, pad: float, w: int, h: int
               ) -> tuple[int, int, int, int]:
    """A square box around ``[x0, x1) x [y0, y1)`` grown by ``pad`` of its side, clipped to
    the ``w x h`` image: ``(x0, y0, x1, y1)``."""
    side = int(round(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * pad)))
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    bx0, by0 = max(0, cx - side // 2), max(0, cy - side // 2)
    return bx0, by0, min(w, bx0 + side), min(h, by0 + side)


def masked_crops(image: np.ndarray, ids: np.ndarray, size: int, pad: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Crops of every instance of ``ids``.

    image ``(H, W, 3) uint8``, ids ``(H, W) int`` (0 = none, 1..N). Returns crops
    ``(N, size, size, 3) uint8`` (outside the instance: neutral grey) and their masks
    ``(N, size, size) bool``; ids with no pixel give an all-grey crop and an empty mask."""
    n = int(ids.max()) if ids.size else 0
    crops = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    h, w = ids.shape
    for i, box in enumerate(ndimage.find_objects(ids.astype(np.int32), max_label=n), 1):
        crops[i - 1] = NEUTRAL_RGB
        if box is None:
            continue
        ys, xs = box
        x0, y0, x1, y1 = square_box(xs.start, ys.start, xs.stop, ys.stop, pad, w, h)
        inside = ids[y0:y1, x0:x1] == i
        crop = np.where(inside[..., None], image[y0:y1, x0:x1], np.uint8(NEUTRAL_RGB))
        crops[i - 1] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        masks[i - 1] = cv2.resize(inside.astype(np.uint8), (size, size),
                                  interpolation=cv2.INTER_NEAREST) > 0
    return crops, masks


def pool_masked(feats: torch.Tensor, masks: np.ndarray) -> np.ndarray:
    """``(N, C, h, w)`` features and ``(N, S, S) bool`` masks -> ``(N, C) float32``: the mean
    over the cells the mask covers by at least half (all cells when it covers none),
    L2-normalised."""
    n, _, h, w = feats.shape
    cover = torch.from_numpy(masks.astype(np.float32)).to(feats.device)[:, None]
    cover = torch.nn.functional.adaptive_avg_pool2d(cover, (h, w))[:, 0]  # (N, h, w)
    weight = (cover >= 0.5).float()
    weight[weight.flatten(1).sum(1) == 0] = 1.0
    pooled = (feats * weight[:, None]).flatten(2).sum(2) / weight.flatten(1).sum(1)[:, None]
    return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy().astype(np.float32)


def embed_objects(extractor: FeatureExtractor, image: np.ndarray, ids: np.ndarray, *,
                  size: int = 64, batch: int = 32) -> np.ndarray:
    """``(H, W, 3) uint8`` image + ``(H, W)`` instance ids -> ``(N, C) float32`` embeddings
    (row i-1 for id i; C = ``extractor.channels``)."""
    crops, masks = masked_crops(image, ids, size)
    out = np.zeros((len(crops), extractor.channels), np.float32)
    for s in range(0, len(crops), batch):
        feats = extractor.features(list(crops[s:s + batch]))
        out[s:s + batch] = pool_masked(feats, masks[s:s + batch])
    return out
