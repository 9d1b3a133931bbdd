"""WaW's feature-space rules (PASTA §III-B, §IV-A): Target Feature Bag, hyperspheres, vote.

All features are ``(N, C) float32`` rows (object embeddings); distances are Euclidean.

- **Popularity voting** (the Target Feature Bag): every calibration feature (baseline and
  reference) votes for its ``k_v`` nearest reference features; a reference feature with fewer
  than ``min_votes`` votes is an outlier (a fragment, a stray anomaly in the reference set)
  and is left out of the bag. Frequent (popular) features are the targets.
- **Hyperspheres**: each bag feature gets a radius, its distance to its ``k_sphere``-th
  nearest neighbour among the other reference features (``k_sphere`` = density).
- **Feature voting** at inference: a query's ``k_v`` nearest bag features each vote
  "target" when the query lies inside their hypersphere; when fewer than ``vote_share`` of
  them do, the query is rare and is an anomaly.
"""

from __future__ import annotations

import numpy as np
import torch

from pasta_ros.core.errors import CalibrationError

CHUNK = 2048  # query rows per distance block: memory CHUNK x N floats


def knn(queries: np.ndarray, refs: np.ndarray, k: int, *, exclude: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``refs`` of each query: distances ``(Q, k) float32`` (ascending) and
    indices ``(Q, k) int64``. ``exclude``: ``(Q,) int64``, the row of ``refs`` that is the
    query itself (never its own neighbour)."""
    r = torch.from_numpy(np.ascontiguousarray(refs, np.float32))
    available = r.shape[0] - int(exclude is not None)
    if k < 1 or k > available:
        raise CalibrationError(f"k={k} neighbours asked among {available} features")
    dists, idx = [], []
    for s in range(0, len(queries), CHUNK):
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + CHUNK], np.float32))
        d = torch.cdist(q, r)
        if exclude is not None:
            d[torch.arange(q.shape[0]), torch.from_numpy(exclude[s:s + CHUNK])] = float("inf")
        top = torch.topk(d, k, dim=1, largest=False)
        dists.append(top.values)
        idx.append(top.indices)
    if not dists:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def popularity(reference: np.ndarray, voters: np.ndarray, k_v: int) -> np.ndarray:
    """Votes per reference feature: ``(N_ref,) int64``. Each row of ``voters`` votes for its
    ``k_v`` nearest reference features, each reference feature for its ``k_v`` nearest other
    reference features."""
    k = min(k_v, len(reference) - 1)
    _, own = knn(reference, reference, k, exclude=np.arange(len(reference)))
    votes = np.bincount(own.ravel(), minlength=len(reference))
    if len(voters):
        _, other = knn(voters, reference, min(k_v, len(reference)))
        votes += np.bincount(other.ravel(), minlength=len(reference))
    return votes


def hypersphere_radii(bag: np.ndarray, reference: np.ndarray, bag_index: np.ndarray,
                      k_sphere: int) -> np.ndarray:
    """``(N_bag,) float32`` radii: distance of each bag feature (row ``bag_index[i]`` of
    ``reference``) to its ``k_sphere``-th nearest other reference feature."""
    if k_sphere > len(reference) - 1:
        raise CalibrationError(
            f"waw_k_sphere={k_sphere} needs more than {k_sphere} reference object features, "
            f"but the reference set gave {len(reference)}: use --waw-k-sphere "
            f"{max(1, len(reference) - 1)} or less, or more reference images")
    dist, _ = knn(bag, reference, k_sphere, exclude=bag_index)
    return dist[:, -1].astype(np.float32)


def target_bag(reference: np.ndarray, baseline: np.ndarray, k_sphere: int, k_v: int,
               min_votes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Target Feature Bag: bag ``(M, C) float32``, radii ``(M,) float32`` and votes
    ``(N_ref,) int64`` of every reference feature. Raises CalibrationError when ``k_sphere``
    or ``k_v`` exceed what the reference set holds, or no feature reaches ``min_votes``."""
    if k_sphere > len(reference) - 1:  # checked first: the vote would fail less clearly
        hypersphere_radii(reference[:1], reference, np.zeros(1, np.int64), k_sphere)
    votes = popularity(reference, baseline, k_v)
    keep = np.flatnonzero(votes >= min_votes)
    if len(keep) < k_v:
        raise CalibrationError(
            f"only {len(keep)} reference features reached waw_min_votes={min_votes}, fewer "
            f"than waw_k_v={k_v}: lower --waw-min-votes or --waw-k-v, or add reference images")
    bag = np.ascontiguousarray(reference[keep], np.float32)
    return bag, hypersphere_radii(bag, reference, keep, k_sphere), votes


def vote(queries: np.ndarray, bag: np.ndarray, radii: np.ndarray, k_v: int,
         vote_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Feature voting: ``(Q,) bool`` anomaly flags and ``(Q,) float32`` target-vote shares.

    A query is an anomaly when fewer than ``vote_share`` of its ``k_v`` nearest bag features
    hold it inside their hypersphere (distance <= radius)."""
    if not len(queries):
        return np.zeros(0, bool), np.zeros(0, np.float32)
    dist, idx = knn(queries, bag, min(k_v, len(bag)))
    share = (dist <= radii[idx]).mean(axis=1).astype(np.float32)
    return share < vote_share, share
