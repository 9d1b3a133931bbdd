"""Self-checks of a calibration: plain sentences saying what looks wrong and what to do.

:func:`calibration_checks` reads only the calibrated model (distributions, flags, stats), so
the CLI, the calibration report and the node's diagnostics can all call it on any model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

THIN_MARGIN = 2.0  # a ratio within this factor of the threshold (either side) is thin
REF_FREQUENT = 0.005  # share of the reference patches that makes a cluster "frequent"
REF_OVER_BASE = 3.0  # P_ref / P_base above which a cluster is "rare in the baseline"
BG_EXCESS = 1.5  # P_base / P_empty above which a background cluster also covers objects
BG_MIN_SHARE = 0.01


@dataclass(frozen=True)
class Check:
    """One finding: a stable ``code`` and a sentence with what to do."""

    code: str
    message: str

    def to_json(self) -> dict:
        return asdict(self)


def calibration_checks(model, clusters: int | None = None) -> list[Check]:
    """Every check that fires for ``model`` (a :class:`CalibratedModel`); [] when all pass.

    clusters: the K asked for (default: the model's number of centres).
    """
    k = int(clusters if clusters is not None else model.centers.shape[0])
    found = [_no_anomaly(model), _thin_margin(model), _reference_anomalies(model),
             _too_few_images(model, k), _background_objects(model)]
    return [c for c in found if c is not None]


def ratios(model) -> np.ndarray:
    """``(K,) float64`` R_k = P_ref / P_base (inf where the baseline has none)."""
    p_base = np.asarray(model.p_baseline, np.float64)
    p_ref = np.asarray(model.p_reference, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p_base > 0, p_ref / np.where(p_base > 0, p_base, 1), np.inf)


def _no_anomaly(model) -> Check | None:
    if np.asarray(model.anomaly, bool).any():
        return None
    return Check("no_anomaly_cluster",
                 f"No cluster has P_ref/P_base below {model.ratio_threshold:g}, so this model "
                 "will never report an anomaly. Check that the baseline set really contains "
                 "anomalies and the reference set none; then try more clusters (--clusters), "
                 "keep --split-clusters on, or add an empty-scene set (--empty).")


def _thin_margin(model) -> Check | None:
    objects = ~np.asarray(model.background, bool) & (np.asarray(model.p_baseline) > 0)
    r, thr = ratios(model), float(model.ratio_threshold)
    if thr <= 0 or not objects.any():
        return None
    near = np.flatnonzero(objects & (r >= thr / THIN_MARGIN) & (r <= thr * THIN_MARGIN))
    if near.size == 0:
        return None
    k = int(near[np.argmin(np.abs(np.log(r[near] / thr)))])
    side = "an anomaly" if model.anomaly[k] else "not an anomaly"
    return Check("thin_margin",
                 f"Cluster {k} has P_ref/P_base = {r[k]:.3f}, close to the threshold "
                 f"{thr:g}; it is {side} now, but a few images more or less could flip it. "
                 f"Look at cluster {k} in report/clusters_*.png and add baseline and "
                 "reference images (or check the reference set for anomalies).")


def _reference_anomalies(model) -> Check | None:
    p_base = np.asarray(model.p_baseline, np.float64)
    p_ref = np.asarray(model.p_reference, np.float64)
    suspect = ~np.asarray(model.background, bool) & (p_ref >= REF_FREQUENT) & \
        (p_ref >= REF_OVER_BASE * p_base)
    if model.p_empty is not None:
        suspect &= np.asarray(model.p_empty, np.float64) < 0.1 * p_ref
    if not suspect.any():
        return None
    k = int(np.flatnonzero(suspect)[np.argmax(p_ref[suspect])])
    empty = " and none of the empty scenes" if model.p_empty is not None else ""
    return Check("reference_contains_anomalies",
                 f"Cluster {k} covers {100 * p_ref[k]:.1f}% of the reference patches but only "
                 f"{100 * p_base[k]:.1f}% of the baseline{empty}: the reference set seems to "
                 "hold objects the baseline lacks, such as anomalies that were not sorted out. "
                 "Check the reference images and remove any with anomalies, then recalibrate.")


def _too_few_images(model, k: int) -> Check | None:
    n_base = int(model.stats.get("baseline_images", 0))
    n_ref = int(model.stats.get("reference_images", 0))
    if n_base >= k and 2 * n_ref >= k:
        return None
    return Check("too_few_images",
                 f"{n_base} baseline and {n_ref} reference images for K = {k} clusters: the "
                 "cluster shares are estimated from too few images. Use at least K baseline "
                 f"and K/2 reference images ({k} and {(k + 1) // 2}), or lower --clusters.")


def _background_objects(model) -> Check | None:
    if model.p_empty is None:
        return None
    bg = np.asarray(model.background, bool)
    p_base = np.asarray(model.p_baseline, np.float64)
    p_empty = np.asarray(model.p_empty, np.float64)
    covers = bg & (p_base >= BG_MIN_SHARE) & (p_base >= BG_EXCESS * p_empty)
    if not covers.any():
        return None
    k = int(np.flatnonzero(covers)[np.argmax(p_base[covers])])
    return Check("background_covers_objects",
                 f"Background cluster {k} is {p_base[k] / max(p_empty[k], 1e-12):.1f}x as "
                 "frequent in the baseline as in the empty scenes: it also covers objects, "
                 "which the segmenter will then miss. Add empty-scene images that match the "
                 "belt (same lighting), or raise --background-ratio.")
