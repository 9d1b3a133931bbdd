"""``/diagnostics`` for pasta_node: rate, latency p50/p95, frame counters, model id.

Published as ``diagnostic_msgs/DiagnosticArray`` (one DiagnosticStatus named
``<fully qualified node name>: pasta`` with ``hardware_id`` = the camera's frame_id, every value
a KeyValue) when diagnostic_msgs imports. Where it
does not (a stripped ROS install), the same values go out as one JSON object in a
``std_msgs/String`` on ``pasta/diagnostics_json`` instead, and a warning says so.

Level: ERROR when no camera frame came for 5 x ``input_timeout_s``, WARN after
``input_timeout_s`` (a dead camera is not OK at 0 Hz); ERROR / WARN when the latency p95
passes ``diag_latency_error_ms`` / ``diag_latency_warn_ms``; WARN on new bad frames, frames lost
in the middleware, frames that arrive but are not processed, an output rate under
``diag_min_rate_hz`` or a drop share over ``diag_drop_share_warn`` while frames come, or on
calibration self-checks; OK otherwise.

Keys: rate_hz, input_age_s (seconds since the last input frame), latency_p50_ms,
latency_p95_ms (receive -> publish in the node),
overhead_p50_ms, overhead_p95_ms (the same without inference), frames_in, frames_processed,
frames_dropped, frames_bad, frames_in_flight, frames_lost_dds (reported lost by the middleware
before reaching the node), last_bad_frame (why the last bad frame was refused), model_id,
model_dir, lineage, backend (what frames run on, e.g. onnxruntime fp32), recalibrating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

try:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
except ImportError:  # pragma: no cover - diagnostic_msgs ships with every ROS 2 install
    DiagnosticArray = None


def status_name(node_name: str) -> str:
    """The DiagnosticStatus name of the node ``node_name`` (fully qualified): two cameras'
    nodes never collide."""
    return f"{node_name}: pasta"


FALLBACK_TOPIC = "pasta/diagnostics_json"


@dataclass(frozen=True)
class Limits:
    """Diagnostics thresholds (node parameters ``input_timeout_s`` and ``diag_*``; 0 = off,
    ``drop_share_warn`` 1.0 = off)."""

    input_timeout_s: float = 2.0
    latency_warn_ms: float = 0.0
    latency_error_ms: float = 0.0
    min_rate_hz: float = 0.0
    drop_share_warn: float = 1.0


def _flow_level(values: dict[str, Any], previous: dict[str, Any] | None,
                limits: Limits) -> tuple[int, str] | None:
    """WARN / ERROR from latency p95, output rate and drop share (while frames come)."""
    p95 = float(values.get("latency_p95_ms", 0.0))
    if limits.latency_error_ms and p95 > limits.latency_error_ms:
        return 2, f"latency p95 {p95:g} ms > {limits.latency_error_ms:g} ms (ERROR)"
    if limits.latency_warn_ms and p95 > limits.latency_warn_ms:
        return 1, f"latency p95 {p95:g} ms > {limits.latency_warn_ms:g} ms (WARN)"
    if previous is None:
        return None
    came = values["frames_in"] - previous["frames_in"]
    rate = float(values.get("rate_hz", 0.0))
    if limits.min_rate_hz and came > 0 and rate < limits.min_rate_hz:
        return 1, f"output rate {rate:g} Hz < {limits.min_rate_hz:g} Hz (WARN)"
    dropped = values["frames_dropped"] - previous["frames_dropped"]
    if came > 0 and dropped / came > limits.drop_share_warn:
        return 1, (f"dropped {dropped} of {came} frames in the last period "
                   f"(> {limits.drop_share_warn:.0%}, WARN)")
    return None


def status_level(values: dict[str, Any], previous: dict[str, Any] | None,
                 limits: Limits = Limits()) -> tuple[int, str]:
    """(level, message): see the module docstring. Levels follow DiagnosticStatus (0 OK,
    1 WARN, 2 ERROR)."""
    summary = (f"{values['rate_hz']} Hz, latency p50 {values['latency_p50_ms']} ms, "
               f"model {values['model_id']}")
    age, timeout = float(values.get("input_age_s", 0.0)), limits.input_timeout_s
    if age >= timeout:
        level = 2 if age >= 5 * timeout else 1
        return level, (f"no camera frame for {age:.1f} s (WARN after {timeout:g} s, "
                       f"ERROR after {5 * timeout:g} s): check the camera and the "
                       "image topic; " + summary)
    flow = _flow_level(values, previous, limits)
    if flow is not None and flow[0] == 2:
        return flow[0], f"{flow[1]}; " + summary
    if previous is not None:
        if values["frames_bad"] > previous["frames_bad"]:
            return 1, f"skipped {values['frames_bad'] - previous['frames_bad']} bad frame(s) " \
                      f"(last: {values.get('last_bad_frame', '')}); " + summary
        lost = values.get("frames_lost_dds", 0) - previous.get("frames_lost_dds", 0)
        if lost > 0:
            return 1, f"{lost} frame(s) lost in the middleware; " + summary
        if values["frames_in"] > previous["frames_in"] and \
                values["frames_processed"] == previous["frames_processed"]:
            return 1, "frames arrive but none was processed in the last period; " + summary
    if flow is not None:
        return flow[0], f"{flow[1]}; " + summary
    if values.get("self_checks"):
        return 1, f"calibration self-checks: {values['self_checks']}; " + summary
    return 0, summary


class DiagnosticsPublisher:
    """Publishes the node's statistics; ``publish(values)`` is called from a timer."""

    def __init__(self, node, name: str) -> None:
        self.node = node
        self.name = name
        self._previous: dict[str, Any] | None = None
        if DiagnosticArray is not None:
            self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        else:
            from std_msgs.msg import String
            self.pub = node.create_publisher(String, FALLBACK_TOPIC, 10)
            node.get_logger().warning("diagnostic_msgs is not installed: diagnostics go to "
                                      f"{FALLBACK_TOPIC} as JSON")

    def publish(self, values: dict[str, Any], hardware_id: str = "",
                limits: Limits = Limits()) -> None:
        """One report; ``hardware_id``: the camera's frame_id (last frame seen)."""
        level, message = status_level(values, self._previous, limits)
        self._previous = dict(values)
        if DiagnosticArray is None:
            from std_msgs.msg import String
            self.pub.publish(String(data=json.dumps(values | {"level": level,
                                                              "message": message})))
            return
        status = DiagnosticStatus(
            level=bytes([level]), name=self.name, message=message, hardware_id=hardware_id,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


def self_check_values(model) -> dict[str, str]:
    """Diagnostics keys for the calibration self-checks of ``model`` (issue 9):
    ``self_checks`` (codes, ``;``-separated, '' when all pass) and ``self_check_messages``.
    Merge into the node's status values; :func:`status_level` then reports WARN."""
    from pasta_ros.core.self_checks import calibration_checks

    checks = calibration_checks(model)
    return {"self_checks": ";".join(c.code for c in checks),
            "self_check_messages": " ".join(c.message for c in checks)}


def values_from_status(status) -> dict[str, str]:
    """A received DiagnosticStatus's KeyValues as a dict (clients, tests)."""
    return {kv.key: kv.value for kv in status.values}
