"""Figures of `pasta report` (PASTA Figs. 6 and 7): PNGs from summary numbers, no model code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_ksphere(k_spheres: Sequence[int], curves: dict[str, tuple[np.ndarray, np.ndarray]],
                 path: str | Path, title: str) -> Path:
    """Fig. 6: IoU [%] vs k_sphere, one line per curve name with a +-std band.

    curves: ``{name: (mean (n,), std (n,))}`` over ``k_spheres`` (n values)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=120)
    x = np.asarray(k_spheres, float)
    for name, (mean, std) in curves.items():
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("k_sphere (hypersphere density)")
    ax.set_ylabel("IoU [%]")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_heatmap(k_spheres: Sequence[int], k_vs: Sequence[int], values: np.ndarray,
                 path: str | Path, title: str) -> Path:
    """Fig. 7: ``(len(k_spheres), len(k_vs))`` anomaly IoU [%] as an annotated heatmap."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(k_vs) + 2.5, 0.5 * len(k_spheres) + 2), dpi=120)
    im = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0,
                   vmax=max(1.0, float(np.nanmax(values)) if values.size else 1.0))
    ax.set_xticks(range(len(k_vs)), [str(v) for v in k_vs])
    ax.set_yticks(range(len(k_spheres)), [str(v) for v in k_spheres])
    ax.set_xlabel("k_v (feature voting K)")
    ax.set_ylabel("k_sphere")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label="anomaly IoU [%]")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return Path(path)
