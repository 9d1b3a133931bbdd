"""The node's recalibration interfaces: the ``pasta/recalibrate`` service (one call) and
action (feedback, cancel), both over :class:`~pasta_ros.ros.recalibration.Recalibrator`.
A mixin of :class:`~pasta_ros.ros.node.PastaNodeMixin` (it uses the node's settings,
pipeline, logger and recalibrator)."""

from __future__ import annotations

import math
import threading
import time

from rclpy.action import GoalResponse

from pasta_msgs.action import Recalibrate as RecalibrateAction
from pasta_msgs.msg import ClusterStats
from pasta_ros.ros.params import RUNTIME_CONFIG
from pasta_ros.ros.recalibration import Outcome, Request


class RecalibrationInterface:
    """Service and action handlers; the node creates the entities in its wiring."""

    def _recalibration_request(self, msg) -> Request:
        """A Recalibrate service request or action goal (same fields) -> Request."""
        return Request(msg.baseline_bag, msg.reference_bag, msg.empty_bag,
                       msg.image_topic or self.sub.topic_name,
                       clusters=msg.clusters if msg.clusters > 0 else None,
                       ratio_threshold=msg.ratio_threshold if msg.ratio_threshold >= 0 else None,
                       vote_threshold=msg.vote_threshold if msg.vote_threshold >= 0 else None)

    def _recalibrate(self, msg, answer, **run_options) -> Outcome:
        """Run one recalibration for a request/goal and fill ``answer`` (service response or
        action result: same fields)."""
        s = self.settings
        req = self._recalibration_request(msg)
        self.get_logger().info(f"recalibration requested: {req}")
        try:
            outcome = self.recalibrator.run(req, s.config, self.pipeline,
                                            self.store, s.min_recalibration_frames,
                                            lambda o: self._swap_in(o, s),
                                            cache_dir=self.cache_dir,
                                            **run_options)
        except Exception as exc:  # noqa: BLE001 - always answer the caller
            outcome = Outcome(False, f"recalibration failed: internal error: {exc!r}")
        if outcome.success:  # (rclpy: one severity per logging call site)
            self.get_logger().info(outcome.message)
        else:
            self.get_logger().warning(outcome.message)
        answer.success = outcome.success
        answer.message = outcome.message
        answer.model_id = self.pipeline.model.model_id
        if outcome.success:
            answer.model_dir = str(outcome.model_dir)
            answer.clusters = cluster_stats(outcome.model)
        return outcome

    def _on_recalibrate(self, request, response):
        self._recalibrate(request, response)
        return response

    def _on_goal(self, goal) -> GoalResponse:
        if self.recalibrator.running:
            self.get_logger().warning("recalibration goal rejected: a recalibration is "
                                      "already running; send it when that one has finished")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute_recalibration(self, goal_handle):
        """The action: feedback on every progress step and at least every 0.5 s; a cancel is
        answered within ~0.1 s and commits nothing."""
        t0 = time.monotonic()
        last = RecalibrateAction.Feedback(phase="reading")
        finished = threading.Event()

        def send(phase: str | None = None, done: int = 0, total: int = 0) -> None:
            if phase is not None:
                last.phase, last.images_done, last.images_total = phase, done, total
            last.seconds = time.monotonic() - t0
            goal_handle.publish_feedback(last)

        def tick() -> None:
            while not finished.wait(0.5):
                send()

        ticker = threading.Thread(target=tick, name="pasta-recalibrate-feedback", daemon=True)
        ticker.start()
        result = RecalibrateAction.Result()
        try:
            outcome = self._recalibrate(goal_handle.request, result, feedback=send,
                                        cancelled=lambda: goal_handle.is_cancel_requested)
        finally:
            finished.set()
            ticker.join(timeout=2.0)
        if outcome.cancelled and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _swap_in(self, outcome: Outcome, at_start) -> None:
        """Swap the new model in, keeping the run-time parameters in force now (a
        ``vote_threshold`` or ``min_area`` set since ``at_start``, the settings when the
        recalibration began, is not reverted)."""
        with self._swap:
            start, now = at_start.config, self.settings.config
            changed = {n for n in RUNTIME_CONFIG if getattr(start, n) != getattr(now, n)}
            self.pipeline = outcome.pipeline.with_runtime_config(now, changed)
            self.model_dir = outcome.model_dir


def cluster_stats(model) -> list[ClusterStats]:
    """Per-cluster statistics of a calibrated model as ``pasta_msgs/ClusterStats``."""
    ratio = model.ratio()
    return [ClusterStats(id=k, p_baseline=float(model.p_baseline[k]),
                         p_reference=float(model.p_reference[k]),
                         ratio=float(ratio[k]) if not math.isnan(ratio[k]) else math.nan,
                         anomaly=bool(model.anomaly[k]), background=bool(model.background[k]))
            for k in range(model.k)]
