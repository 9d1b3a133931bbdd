"""`pasta recalibrate | prompts | echo | play`: talk to a running pasta_node (rclpy, no ros2cli).

These work wherever rclpy and pasta_msgs import: on a robot's ROS 2 install and in this
project's venv. rclpy is imported inside the functions, so ``pasta`` itself starts without ROS.
:class:`ClientNode` (an rclpy context + node spun in a background thread) and
:class:`BagPlayer` are reused by the ROS demo, the benchmark and the tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pasta_ros.core.errors import PastaError


class ClientNode:
    """An rclpy node in its own context, spun by a background thread until :meth:`close`."""

    def __init__(self, name: str, domain_id: int | None = None) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._action_clients: dict[tuple[Any, str], Any] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)
        self._thread.start()

    def action_client(self, action_type, name: str):
        """This node's one rclpy ``ActionClient`` for action ``name`` of ``action_type``, made on
        first use (destroyed by :meth:`close`).
        Goals sent at once from several threads share it: two clients of one action on one
        node both start their goal requests at sequence number 1, and a response meant for
        one was seen taken by the other ("Ignoring unexpected goal response"), leaving the
        caller with no answer."""
        from rclpy.action import ActionClient

        with self._lock:
            key = (action_type, name)
            if key not in self._action_clients:
                self._action_clients[key] = ActionClient(self.node, action_type, name)
            return self._action_clients[key]

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                return
            except Exception as exc:  # noqa: BLE001
                # an entity destroyed by another thread mid-wait (rclpy's InvalidHandle): the
                # next wait set is built without it
                if type(exc).__name__ != "InvalidHandle":
                    raise

    def call(self, srv_type, name: str, request, timeout: float):
        """Call a service and wait for the response (bounded). Raises PastaError."""
        client = self.node.create_client(srv_type, name)
        t0 = time.monotonic()
        if not client.wait_for_service(timeout_sec=min(timeout, 15.0)):
            raise PastaError(f"service {name} is not available (is pasta_node running, with "
                             "the same ROS_DOMAIN_ID and discovery range?)")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(max(0.0, timeout - (time.monotonic() - t0))):
            raise PastaError(f"no answer from {name} within {timeout:.0f} s")
        return future.result()

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=2.0)
        with self._lock:  # send_goal no longer destroys its client: they end with the node
            for ac in self._action_clients.values():
                ac.destroy()
            self._action_clients.clear()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class BagPlayer:
    """The image messages of one bag topic, ready to publish as they were recorded.

    ``stamps[i]`` is the header stamp (ns) of message i; raw CDR bytes are published as is
    (or deserialised and restamped with ``restamp=True``).
    """

    def __init__(self, client: ClientNode, bag: str | Path, topic: str = "",
                 out_topic: str = "", depth: int = 10) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosbags.rosbag2 import Reader
        from sensor_msgs.msg import CompressedImage, Image

        from pasta_ros.data.bags import TYPESTORE, list_image_topics, read_bag_images

        if not topic:
            topics = list_image_topics(bag)
            if len(topics) != 1:
                raise PastaError(f"{bag} has image topics {', '.join(topics) or 'none'}: "
                                 "choose one with --topic")
            topic = next(iter(topics))
        info = read_bag_images(bag, topic)  # validates path, topic, type, frame count
        self.topic, self.msgtype = info.topic, info.msgtype
        self.msg_class = CompressedImage if self.msgtype.endswith("CompressedImage") else Image
        self.raw: list[bytes] = []
        self.log_ns: list[int] = []
        self.stamps: list[int] = []
        with Reader(Path(bag)) as reader:
            conns = [c for c in reader.connections if c.topic == self.topic]
            for _, t, raw in reader.messages(connections=conns):
                header = TYPESTORE.deserialize_cdr(raw, self.msgtype).header
                self.raw.append(bytes(raw))
                self.log_ns.append(t)
                self.stamps.append(header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.client = client
        self.pub = client.node.create_publisher(self.msg_class, out_topic or self.topic, qos)

    def wait_for_subscriber(self, timeout: float) -> bool:
        """Wait (bounded) until something subscribes to the output topic."""
        deadline = time.monotonic() + timeout
        while self.pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def play(self, rate: float = 0.0, *, loop: bool = False, restamp: bool = False,
             stop: threading.Event | None = None,
             on_publish: Callable[[int, int, float], None] | None = None) -> int:
        """Publish every message (``rate`` Hz, or the recorded gaps when 0); returns how many.

        ``on_publish(index, stamp_ns, perf_counter_time)`` is called after each publish.
        """
        from rclpy.serialization import deserialize_message

        stop = stop or threading.Event()
        sent, start = 0, time.perf_counter()
        while not stop.is_set():
            t_first = self.log_ns[0]
            for i, raw in enumerate(self.raw):
                due = (i / rate) if rate > 0 else (self.log_ns[i] - t_first) / 1e9
                if stop.wait(max(0.0, start + due - time.perf_counter())):
                    return sent
                stamp = self.stamps[i]
                if restamp:
                    msg = deserialize_message(raw, self.msg_class)
                    msg.header.stamp = self.client.node.get_clock().now().to_msg()
                    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    self.pub.publish(msg)
                else:
                    self.pub.publish(raw)
                sent += 1
                if on_publish is not None:
                    on_publish(i, stamp, time.perf_counter())
            if not loop:
                break
            start = time.perf_counter() + (1.0 / rate if rate > 0 else 0.1)
        return sent


def call_once(srv_type, service: str, request, timeout: float):
    """Call ``service`` once from a short-lived client node; PastaError unless it succeeds."""
    client = ClientNode(f"pasta_{srv_type.__name__.lower()}_client")
    try:
        res = client.call(srv_type, service, request, timeout)
    finally:
        client.close()
    if not res.success:
        raise PastaError(res.message)
    return res


def send_goal(client: ClientNode, action_type, name: str, goal, timeout: float,
              on_feedback: Callable[[Any], None] | None = None,
              on_accepted: Callable[[Any], None] | None = None):
    """Send an action goal and wait (bounded) for its result. Returns ``(status, result)``
    (``action_msgs/GoalStatus`` codes); PastaError when the server is missing, rejects the
    goal or does not finish within ``timeout`` s (the goal is then cancelled).
    ``on_accepted(goal_handle)`` gets the accepted goal's handle (e.g. to cancel it)."""
    ac = client.action_client(action_type, name)
    t0 = time.monotonic()
    if not ac.wait_for_server(timeout_sec=min(timeout, 15.0)):
        raise PastaError(f"action {name} is not available (is pasta_node running, with "
                         "the same ROS_DOMAIN_ID and discovery range?)")
    accepted = threading.Event()
    sent = ac.send_goal_async(goal, feedback_callback=(
        (lambda fb: on_feedback(fb.feedback)) if on_feedback else None))
    sent.add_done_callback(lambda _: accepted.set())
    if not accepted.wait(max(0.0, timeout - (time.monotonic() - t0))):
        raise PastaError(f"no answer from {name} within {timeout:.0f} s")
    handle = sent.result()
    if not handle.accepted:
        raise PastaError(f"{name} rejected the goal: a recalibration is already running "
                         "(see the node's log); send it again when that one has finished")
    if on_accepted is not None:
        on_accepted(handle)
    finished = threading.Event()
    result = handle.get_result_async()
    result.add_done_callback(lambda _: finished.set())
    if not finished.wait(max(0.0, timeout - (time.monotonic() - t0))):
        handle.cancel_goal_async()
        raise PastaError(f"{name} did not finish within {timeout:.0f} s; goal cancelled")
    res = result.result()
    return res.status, res.result
