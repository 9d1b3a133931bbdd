"""Reading and encoding one iCAS evaluation category (no scoring): ``reference/`` normal shots
and ``test/images`` with ``test/masks`` or, labels only, ``test/labels.csv``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.model import ICASModel
from pasta_ros.data.images import list_images, read_image_channels
from pasta_ros.data.layout import DatasetLayout, read_labels_csv, read_mask, test_items


@dataclass
class Category:
    """Encoded category: test features ``(1, C, h, w)`` each, ``(H, W) bool`` anomaly masks
    (None for a labels-only set), 0/1 labels; reference (normal) features and their prepared
    ``(h', w', 3) uint8`` images (for shot augmentation and the fusion calibration)."""

    name: str
    test_feats: list[torch.Tensor]
    test_masks: list[np.ndarray | None]
    labels: list[int]
    ref_feats: list[torch.Tensor]
    ref_images: list[np.ndarray]

    @property
    def has_masks(self) -> bool:
        return all(m is not None for m in self.test_masks)


def _check_uniform(kinds: dict[Path, tuple[int, int, int]]) -> None:
    """One size and one channel count per category, else PastaError naming two files."""
    first, k0 = next(iter(kinds.items()))
    for path, k in kinds.items():
        if k != k0:
            what = "channels" if k[:2] == k0[:2] else "sizes"
            raise PastaError(f"mixed image {what} in one category: {first} is {k0[1]}x{k0[0]} "
                             f"with {k0[2]} channel(s), {path} is {k[1]}x{k[0]} with {k[2]}; "
                             "convert the set to one size and one format (gray or colour)")


def load_category(model: ICASModel, root: str | Path) -> Category:
    """Read and encode one dataset: ``reference/`` (normal shots) and ``test/images`` with
    ``test/masks`` or, labels only, ``test/labels.csv``. PastaError when a reference image is
    also a test image (same pixels: a shot would leak into the test set) or sizes / channels
    are mixed."""
    layout = DatasetLayout.for_test(root)
    items = test_items(layout)
    labels_csv = read_labels_csv(layout.labels_csv) if layout.labels_csv else {}
    ref_paths = list_images(layout.reference)
    kinds, read = {}, {}
    for path in [p for _, p, _ in items] + ref_paths:
        image, channels = read_image_channels(path)
        kinds[path], read[path] = (*image.shape[:2], channels), image
    _check_uniform(kinds)
    digest = lambda p: hashlib.sha1(read[p].tobytes()).hexdigest()  # noqa: E731
    test_digests = {digest(p): p for _, p, _ in items}
    leaked = [(p, test_digests[digest(p)]) for p in ref_paths if digest(p) in test_digests]
    if leaked:
        raise PastaError(f"{len(leaked)} reference images are also test images (e.g. "
                         f"{leaked[0][0]} = {leaked[0][1]}); shots must be disjoint from the "
                         "test images")
    feats, masks, labels = [], [], []
    for stem, img_path, mask_path in items:
        feats.append(model.encode([model.prepare(read[img_path])]))
        m = read_mask(mask_path) == 2 if mask_path is not None else None
        masks.append(m)
        if stem not in labels_csv and m is None:
            raise PastaError(f"{layout.labels_csv} has no label for test image {stem}")
        labels.append(int(labels_csv.get(stem, int(m.any()) if m is not None else 0)))
    ref_images = [model.prepare(read[p]) for p in ref_paths]
    refs = [model.encode([im]) for im in ref_images]
    return Category(Path(root).name, feats, masks, labels, refs, ref_images)
