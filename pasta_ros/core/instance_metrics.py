"""Instance-level metrics beside Evaluations A and B: what a grasp planner consumes.

Per class (target, anomaly), over a whole test set:
- instance precision / recall / F1: a predicted instance of the class is a true positive when
  it overlaps a ground-truth instance of the same class with mask IoU >= 0.5 (one-to-one,
  greedy by IoU);
- panoptic quality PQ = SQ x RQ, SQ = mean IoU of the matched pairs, RQ = TP / (TP + FP/2 +
  FN/2) (Kirillov et al., Panoptic Segmentation, 2019).

Ground-truth instances smaller than ``min_area`` pixels (slivers of an occluded object) are
ignored: they are not false negatives, and a prediction lying mostly (> 50 %) on ignored
pixels is not a false positive (the "void" rule of COCO panoptic).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

CLASSES = {"target": 1, "anomaly": 2}


def gt_instances_from_classes(labels: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` {0,1,2} -> ``(H, W) int32`` instance ids: the 8-connected components
    of each class mask (the fallback when a test set has no ``test/instances``)."""
    out = np.zeros(labels.shape, np.int32)
    offset = 0
    for c in (1, 2):
        n, comp = cv2.connectedComponents((labels == c).astype(np.uint8), connectivity=8)
        out[comp > 0] = comp[comp > 0] + offset
        offset += n - 1
    return out


def instance_classes(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(N+1,) uint8`` class of each id of ``ids``: the majority label of its pixels."""
    n = int(ids.max()) + 1 if ids.size else 1
    votes = np.bincount(ids.ravel().astype(np.int64) * 3 + labels.ravel(), minlength=n * 3)
    cls = votes.reshape(n, 3)[:, 1:].argmax(1).astype(np.uint8) + 1
    cls[votes.reshape(n, 3).sum(1) == 0] = 0
    cls[0] = 0
    return cls


def paint_instances(shape: tuple[int, int], instances: Sequence) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Fusion :class:`Instance` list -> ``(H, W) int32`` ids (1..N) and ``(N+1,) uint8``
    classes (0 for id 0)."""
    ids = np.zeros(shape, np.int32)
    cls = np.zeros(len(instances) + 1, np.uint8)
    for k, inst in enumerate(instances, 1):
        x, y, w, h = inst.bbox
        ids[y:y + h, x:x + w][inst.mask] = k
        cls[k] = inst.label
    return ids, cls


def match_class(gt_ids: np.ndarray, gt_cls: np.ndarray, pred_ids: np.ndarray,
                pred_cls: np.ndarray, cls: int, min_area: int = 0) -> np.ndarray:
    """Counts of one image for class ``cls``: ``[tp, fp, fn, sum of matched IoU]`` float64.

    gt_ids / pred_ids: ``(H, W)`` int instance ids (0 = none); gt_cls / pred_cls: ``(N+1,)``
    class per id.
    """
    ng, npd = int(gt_cls.shape[0]), int(pred_cls.shape[0])
    joint = np.bincount(gt_ids.ravel().astype(np.int64) * npd + pred_ids.ravel(),
                        minlength=ng * npd).reshape(ng, npd)
    g_area, p_area = joint.sum(1), joint.sum(0)
    ignored = np.flatnonzero((g_area > 0) & (g_area < min_area))
    g_sel = np.flatnonzero((gt_cls == cls) & (g_area >= max(min_area, 1)))
    p_sel = np.flatnonzero((pred_cls == cls) & (p_area > 0))
    p_sel = p_sel[p_sel > 0]
    g_sel = g_sel[g_sel > 0]
    inter = joint[np.ix_(g_sel, p_sel)].astype(np.float64)
    union = g_area[g_sel, None] + p_area[None, p_sel] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    matched_g, matched_p, iou_sum = set(), set(), 0.0
    for flat in np.argsort(-iou, axis=None):
        gi, pi = divmod(int(flat), len(p_sel))
        if iou[gi, pi] < 0.5:
            break
        if gi in matched_g or pi in matched_p:
            continue
        matched_g.add(gi)
        matched_p.add(pi)
        iou_sum += float(iou[gi, pi])
    void = joint[ignored][:, p_sel].sum(0) if ignored.size else np.zeros(len(p_sel))
    unmatched_p = [j for j in range(len(p_sel)) if j not in matched_p
                   and void[j] <= 0.5 * p_area[p_sel[j]]]
    tp = len(matched_g)
    return np.array([tp, len(unmatched_p), len(g_sel) - tp, iou_sum], np.float64)


class InstanceScores:
    """Accumulates :func:`match_class` counts over a test set for both classes."""

    def __init__(self, min_area: int = 0) -> None:
        self.min_area = int(min_area)
        self.counts = {name: np.zeros(4, np.float64) for name in CLASSES}

    def add(self, gt_ids: np.ndarray, gt_labels: np.ndarray, pred_ids: np.ndarray,
            pred_cls: np.ndarray) -> None:
        """One image: ``(H, W)`` GT ids and ``(H, W) uint8`` GT labels; predicted ids and
        ``(N+1,)`` predicted class per id."""
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"instance image {gt_ids.shape} and prediction {pred_ids.shape} "
                             "differ in size")
        gt_cls = instance_classes(gt_ids, gt_labels)
        for name, c in CLASSES.items():
            self.counts[name] += match_class(gt_ids, gt_cls, pred_ids, pred_cls, c,
                                             self.min_area)

    def result(self) -> dict[str, float]:
        """``instance_{precision,recall,f1}_{cls}``, ``pq_/sq_/rq_{cls}`` in %, and the
        counts ``instance_{tp,fp,fn}_{cls}``; nan where a ratio has no denominator."""
        out: dict[str, float] = {}
        for name, (tp, fp, fn, iou_sum) in self.counts.items():
            prec = _ratio(tp, tp + fp)
            rec = _ratio(tp, tp + fn)
            rq = _ratio(tp, tp + 0.5 * fp + 0.5 * fn)
            sq = _ratio(iou_sum, tp)
            out |= {f"instance_precision_{name}": prec, f"instance_recall_{name}": rec,
                    f"instance_f1_{name}": _ratio(2 * tp, 2 * tp + fp + fn),
                    f"sq_{name}": sq, f"rq_{name}": rq,
                    f"pq_{name}": sq * rq / 100 if tp else (0.0 if np.isfinite(rq) else rq),
                    f"instance_tp_{name}": int(tp), f"instance_fp_{name}": int(fp),
                    f"instance_fn_{name}": int(fn)}
        return out


def _ratio(a: float, b: float) -> float:
    return 100.0 * a / b if b > 0 else float("nan")
