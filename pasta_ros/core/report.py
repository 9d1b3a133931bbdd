"""Calibration report and overlays: the paper's Fig. 1 and coloured masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pasta_ros.core.model_io import CalibratedModel

# Colours as in the paper's Fig. 8: blue target, red anomaly (RGB).
LABEL_COLORS = np.array([[0, 0, 0], [40, 110, 255], [255, 40, 40]], np.uint8)


def write_rgb(path: str | Path, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3) uint8`` RGB image (PNG/JPEG by extension)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def overlay_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend ``(H, W) uint8`` {0,1,2} labels over ``(H, W, 3) uint8`` RGB; outlines drawn."""
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * LABEL_COLORS[labels[fg]]
    edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges] = LABEL_COLORS[np.maximum(labels, 1)][edges]
    return out.astype(np.uint8)


def cluster_palette(k: int) -> np.ndarray:
    """``(K, 3) uint8`` distinct colours (HSV wheel)."""
    hsv = np.stack([np.arange(k) * 180 // max(k, 1), np.full(k, 200), np.full(k, 230)], 1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]


def overlay_clusters(image: np.ndarray, cluster_map: np.ndarray, anomaly: np.ndarray,
                     alpha: float = 0.5) -> np.ndarray:
    """Cluster map ``(h, w)`` over the image; anomaly-cluster patches hatched in red."""
    h, w = image.shape[:2]
    cmap = cv2.resize(cluster_map.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    colors = cluster_palette(len(anomaly))[cmap]
    out = ((1 - alpha) * image + alpha * colors).astype(np.uint8)
    stripes = ((np.add.outer(np.arange(h), np.arange(w)) // 4) % 2 == 0) & anomaly[cmap]
    out[stripes] = (255, 0, 0)
    return out


def plot_distributions(model: CalibratedModel, path: str | Path) -> Path:
    """The paper's Fig. 1: baseline vs reference area fraction per cluster, anomalies marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.arange(model.k)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * model.k + 2), 3.6), dpi=120)
    ax.bar(k - 0.2, model.p_baseline * 100, 0.4, label="baseline (mixed)", color="#3b75af")
    ax.bar(k + 0.2, model.p_reference * 100, 0.4, label="reference (anomaly-free)",
           color="#ef8636")
    if model.p_empty is not None:
        ax.plot(k, model.p_empty * 100, "k.", label="empty scenes")
    tops = [model.p_baseline.max(), model.p_reference.max()]
    tops += [model.p_empty.max()] if model.p_empty is not None else []
    top = max(tops) * 100
    for i in np.flatnonzero(model.anomaly):
        ax.annotate("anomaly", (i, model.p_baseline[i] * 100), xytext=(0, 8),
                    textcoords="offset points", ha="center", color="red", fontsize=7,
                    rotation=90)
        ax.axvspan(i - 0.5, i + 0.5, color="red", alpha=0.08)
    ax.set_xticks(k)
    for i, tick in enumerate(ax.get_xticklabels()):
        if model.background[i]:
            tick.set_color("grey")
            tick.set_fontstyle("italic")
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel("cluster (grey italic = background cluster)")
    ax.set_ylabel("area fraction [%]")
    ax.set_title(f"{model.model_id}: R_k < {model.ratio_threshold:g} -> anomaly")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
