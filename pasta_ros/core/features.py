"""Patch features for images: resize to the network size, normalise, run the backbone."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from pasta_ros.core.backbones.base import Backbone
from pasta_ros.core.preprocess import check_min_size, network_size, resize_rgb, to_tensor_batch

# A re-iterable image set: each call yields (name, (H, W, 3) uint8 RGB) afresh.
ImageSource = Callable[[], Iterable[tuple[str, np.ndarray]]]


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU -> clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; "
                           "use device 'cpu' or 'auto'")
    return torch.device(device)


class FeatureExtractor:
    """Backbone + preprocessing. ``max_size = (W, H)``: images are fitted into it with the
    aspect kept and sides rounded to the backbone stride."""

    def __init__(self, backbone: Backbone, max_size: tuple[int, int],
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.info = backbone.info
        self.max_size = max_size

    def size_for(self, image: np.ndarray) -> tuple[int, int]:
        """Network input ``(W, H)`` for an ``(H, W, 3)`` image."""
        check_min_size(image, 1)
        h, w = image.shape[:2]
        return network_size(w, h, self.max_size[0], self.max_size[1], self.info.stride)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` -> resized ``(H', W', 3) uint8`` at the network size."""
        return resize_rgb(image, self.size_for(image))

    @torch.inference_mode()
    def features(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size prepared images -> ``(B, C, h, w) float32`` on the extractor's device."""
        for img in prepared:
            check_min_size(img, self.info.stride)
        x = to_tensor_batch(prepared, self.info.mean, self.info.std, self.device)
        return self.backbone(x).float()

    def batches(self, source: Iterable[tuple[str, np.ndarray]], batch_size: int,
                ) -> Iterator[tuple[list[str], list[np.ndarray], torch.Tensor]]:
        """Yield (names, prepared images, features) for batches of same-size images."""
        names: list[str] = []
        imgs: list[np.ndarray] = []
        for name, image in source:
            prepared = self.prepare(image)
            if imgs and (prepared.shape != imgs[0].shape or len(imgs) == batch_size):
                yield names, imgs, self.features(imgs)
                names, imgs = [], []
            names.append(name)
            imgs.append(prepared)
        if imgs:
            yield names, imgs, self.features(imgs)


def prepared_images(extractor: FeatureExtractor, source: ImageSource,
                    ) -> Iterator[tuple[str, np.ndarray]]:
    """The images of a source resized to the network size (no backbone run)."""
    for name, image in source():
        yield name, extractor.prepare(image)
