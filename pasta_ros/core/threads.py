"""One intra-op thread count for the whole process: torch, ONNX Runtime, numba and OpenCV.

Each library sizes its own pool to every core by default; run one after the other in a frame
they would each spin up a pool of that size, and ORT's spinning workers would keep cores busy
while torch or numba run. :func:`configure_threads` sets them all once, from
``PastaConfig.threads`` or ``$PASTA_THREADS``; ONNX Runtime sessions read
:func:`process_threads` (and have spinning off).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("pasta")

ENV = "PASTA_THREADS"
_configured: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int = 0) -> int:
    """``requested`` > 0 -> it; else ``$PASTA_THREADS`` when set to a positive int; else all
    available cores."""
    if requested > 0:
        return requested
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value > 0:
            return value
        log.warning("ignoring %s=%r (expected a positive integer)", ENV, env)
    return available_cores()


def configure_threads(requested: int = 0) -> int:
    """Set torch, numba and OpenCV to ``resolve_threads(requested)`` intra-op threads and
    remember it for ONNX Runtime sessions; returns the count. Calling again with the same
    resolved count does nothing; with another one it re-applies (last call wins)."""
    global _configured
    n = resolve_threads(requested)
    if _configured == n:
        return n
    import cv2
    import torch

    cv2.setNumThreads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    torch.set_num_threads(n)  # last: numba's OpenMP layer resets the shared OpenMP count
    _configured = n
    return n


def process_threads() -> int:
    """The process's thread count (configured on first use when nobody did)."""
    return _configured if _configured is not None else configure_threads()
