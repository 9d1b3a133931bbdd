"""Pairing ``sensor_msgs/CameraInfo`` with image frames (approximate time), so the node can
republish the intrinsics with each label image's header (``pasta/camera_info``): a planner then
projects masks with depth without matching topics itself.

No rclpy here: the cache holds messages by stamp and the node calls it from two callbacks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


def stamp_ns(header: Any) -> int:
    """Header stamp -> integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class CameraInfoCache:
    """The last ``depth`` CameraInfo messages by stamp; :meth:`match` pairs one with a frame.

    Counters (for diagnostics): ``received``, ``matched``, ``unmatched`` (no CameraInfo within
    ``slop_s`` of the frame), ``size_mismatch`` (width/height differ from the frame's).
    """

    def __init__(self, slop_s: float = 0.05, depth: int = 30) -> None:
        self.slop_ns = int(slop_s * 1e9)
        self.depth = depth
        self._by_stamp: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.counts = {"received": 0, "matched": 0, "unmatched": 0, "size_mismatch": 0}

    def put(self, msg: Any) -> None:
        with self._lock:
            self._by_stamp[stamp_ns(msg.header)] = msg
            while len(self._by_stamp) > self.depth:
                self._by_stamp.popitem(last=False)
            self.counts["received"] += 1

    def match(self, header: Any, width: int, height: int) -> tuple[Any | None, str]:
        """The CameraInfo for a frame of ``width`` x ``height`` stamped ``header``: the one with
        the same stamp, else the nearest within the slop. Returns (msg or None, reason)."""
        t = stamp_ns(header)
        with self._lock:
            best = min(self._by_stamp, key=lambda s: abs(s - t), default=None)
            if best is None or abs(best - t) > self.slop_ns:
                self.counts["unmatched"] += 1
                return None, "no camera_info within the slop of the frame's stamp"
            msg = self._by_stamp[best]
            if (int(msg.width), int(msg.height)) != (width, height):
                self.counts["size_mismatch"] += 1
                return None, (f"camera_info is {msg.width}x{msg.height} but the image is "
                              f"{width}x{height}: check that both come from the same camera "
                              "and resolution")
            self.counts["matched"] += 1
            return msg, "ok"
