"""The node's frame hand-off: a single-slot latest-frame buffer with its counters (no rclpy).

The subscription callback converts each image and ``put``s it; the inference worker ``take``s
the newest. A frame still waiting when a newer one arrives is dropped and counted, so the
queue never grows and the worker always sees the newest frame. Every frame that came in is,
at any instant, exactly one of: processed, dropped, bad, or in flight (in the slot or being
processed), so ``frames_in == processed + dropped + bad + in_flight`` holds in every
:meth:`LatestFrame.snapshot` (and ``in_flight`` is 0 once the input stops and the worker is idle).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One converted input frame: ``rgb (H, W, 3) uint8``, the message header, and
    ``time.perf_counter()`` stamps of arrival and of the end of conversion."""

    rgb: np.ndarray
    header: Any
    t_received: float
    t_converted: float


class LatestFrame:
    """Thread-safe single slot plus counters and latency windows (last ``window`` frames)."""

    def __init__(self, window: int = 300) -> None:
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self.frames_in = self.processed = self.dropped = self.bad = self.in_flight = 0
        self.lost = 0  # lost inside the middleware before they reached the node
        self.last_bad = ""  # why the last bad frame was bad
        self._latency: deque[float] = deque(maxlen=window)
        self._overhead: deque[float] = deque(maxlen=window)
        self._done: deque[float] = deque(maxlen=window)
        self._started = time.monotonic()
        self._last_in: float | None = None  # any frame, good or bad: the camera is alive

    def put(self, frame: Frame) -> bool:
        """Offer a converted frame; returns True when it replaced (dropped) an older one."""
        with self._cond:
            self.frames_in += 1
            self._last_in = time.monotonic()
            replaced = self._slot is not None
            if replaced:
                self.dropped += 1
            else:
                self.in_flight += 1
            self._slot = frame
            self._cond.notify()
            return replaced

    def bad_frame(self, reason: str = "") -> None:
        """Count a frame that could not be converted (it never enters the slot)."""
        with self._cond:
            self.frames_in += 1
            self._last_in = time.monotonic()
            self.bad += 1
            self.last_bad = reason

    def lost_in_middleware(self, n: int) -> None:
        """Count ``n`` frames the middleware reports lost (never delivered to the node)."""
        with self._cond:
            self.lost += n

    def take(self, timeout: float) -> Frame | None:
        """The newest frame (emptying the slot), or None after ``timeout`` seconds."""
        with self._cond:
            if self._slot is None:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            return frame

    def done(self, latency_ms: float, overhead_ms: float) -> None:
        """The frame taken last was published."""
        with self._cond:
            self.processed += 1
            self.in_flight -= 1
            self._latency.append(latency_ms)
            self._overhead.append(overhead_ms)
            self._done.append(time.monotonic())

    def failed(self, reason: str = "") -> None:
        """The frame taken last could not be processed: counted as bad."""
        with self._cond:
            self.bad += 1
            self.in_flight -= 1
            self.last_bad = reason

    def snapshot(self) -> dict[str, float | int | str]:
        """Consistent counters and statistics: rate (Hz, over the last 5 s of published
        frames), latency and node overhead percentiles (ms, over the window)."""
        with self._cond:
            counts = {"frames_in": self.frames_in, "frames_processed": self.processed,
                      "frames_dropped": self.dropped, "frames_bad": self.bad,
                      "frames_in_flight": self.in_flight, "frames_lost_dds": self.lost,
                      "last_bad_frame": self.last_bad}
            latency, overhead = list(self._latency), list(self._overhead)
            done = list(self._done)
            last_in = self._last_in
        now = time.monotonic()
        recent = [t for t in done if now - t <= 5.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and \
            recent[-1] > recent[0] else 0.0
        # seconds since the last input frame (since the start while none came yet)
        stats = {"rate_hz": round(rate, 2),
                 "input_age_s": round(now - (last_in if last_in is not None else self._started),
                                      2)}
        for name, values in (("latency", latency), ("overhead", overhead)):
            p50, p95 = np.percentile(values, [50, 95]) if values else (0.0, 0.0)
            stats[f"{name}_p50_ms"] = round(float(p50), 2)
            stats[f"{name}_p95_ms"] = round(float(p95), 2)
        return counts | stats
