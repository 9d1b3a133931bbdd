"""Material-aware instance split (issue 9) on hand-made scenes with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pasta_ros.core.fusion import ANOMALY, TARGET, fuse
from pasta_ros.core.instance_split import MaterialSplitSegmenter, split_by_material
from pasta_ros.core.segmenters.clusters import split_instances

H, W, STRIDE = 96, 160, 8
STEEL, COPPER, BELT = (150, 150, 155), (196, 104, 62), (40, 60, 45)


def _scene(seed: int = 0):
    """A copper square touching a steel disc on a dark belt: image, truth labels."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), BELT, np.float32)
    labels = np.zeros((H, W), np.uint8)
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (56, 48), 26, 1, -1)
    square = np.zeros((H, W), bool)
    square[26:70, 82:126] = True  # its left edge x=82 touches the disc's right edge x=82
    labels[disc > 0] = TARGET
    labels[square] = ANOMALY
    img[labels == TARGET] = STEEL
    img[labels == ANOMALY] = COPPER
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def _patch_map(labels: np.ndarray) -> np.ndarray:
    """Anomaly patches: a stride-8 patch is anomalous when >= half its pixels are copper."""
    frac = (labels == ANOMALY).reshape(H // STRIDE, STRIDE, W // STRIDE, STRIDE).mean((1, 3))
    return frac >= 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def test_copper_square_touching_steel_disc_gives_two_instances_with_their_classes():
    img, truth = _scene()
    blob = (truth > 0).astype(np.int32)  # a class-agnostic segmenter's single instance
    patches = _patch_map(truth)
    before = fuse(blob, patches, 0.1)
    assert len(before.instances) == 1 and before.instances[0].label == ANOMALY  # the bug
    ids = split_by_material(blob, img, patches, min_area=150)
    result = fuse(ids, patches, 0.1)
    assert len(result.instances) == 2
    by_class = {i.label: i for i in result.instances}
    assert set(by_class) == {TARGET, ANOMALY}
    for cls in (TARGET, ANOMALY):
        inst = by_class[cls]
        x, y, w, h = inst.bbox
        mask = np.zeros((H, W), bool)
        mask[y:y + h, x:x + w] = inst.mask
        assert _iou(mask, truth == cls) > 0.95  # pixel-accurate, not patch-blocky


def test_wrapper_splits_after_any_segmenter():
    img, truth = _scene(1)
    patches = _patch_map(truth)
    cluster_map = torch.from_numpy(patches.astype(np.int64))  # cluster 1 = the anomaly cluster

    class OneBlob:
        name = "blob"

        def segment(self, image, cmap):
            return (truth > 0).astype(np.int32)

    seg = MaterialSplitSegmenter(OneBlob(), np.array([False, True]), min_area=150)
    ids = seg.segment(img, cluster_map)
    assert ids.max() == 2
    labels = fuse(ids, patches, 0.1).labels
    assert _iou(labels == ANOMALY, truth == ANOMALY) > 0.95
    assert _iou(labels == TARGET, truth == TARGET) > 0.95


def test_two_touching_steel_discs_give_two_targets():
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (50, 48), 24, 1, -1)
    cv2.circle(mask, (97, 48), 24, 1, -1)  # centres 47 px apart: the discs touch
    n, _ = cv2.connectedComponents(mask)
    assert n == 2  # one blob
    ids = split_instances(mask.astype(bool), 0.5, 150)
    img = np.where(mask[..., None] > 0, STEEL, BELT).astype(np.uint8)
    ids = split_by_material(ids, img, np.zeros((H // 8, W // 8), bool))  # no anomaly: no-op
    result = fuse(ids, np.zeros((H // 8, W // 8), bool), 0.1)
    assert len(result.instances) == 2
    assert all(i.label == TARGET for i in result.instances)


def test_uniform_copper_with_a_non_anomalous_patch_row_is_not_split():
    """Patches of one copper piece fall partly in a non-anomaly cluster (say a highlight);
    its colour is uniform, so the colour models are not apart and it stays one piece."""
    rng = np.random.default_rng(2)
    truth = np.zeros((H, W), np.uint8)
    truth[16:80, 40:120] = ANOMALY
    img = np.full((H, W, 3), BELT, np.float32)
    img[truth > 0] = COPPER
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    patches = _patch_map(truth)
    patches[6:10] = False  # the lower half of the piece: not anomalous patches
    ids = split_by_material((truth > 0).astype(np.int32), img, patches, min_area=150)
    assert ids.max() == 1
