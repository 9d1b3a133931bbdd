"""Helpers for talking to a pasta_node over real DDS: build camera messages, collect the node's
outputs by header stamp, read /diagnostics, call the parameter services. Used by the tests,
the ROS demo and ``pasta bench ros``; every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image

from pasta_msgs.msg import InstanceArray
from pasta_ros.core.errors import PastaError
from pasta_ros.data.bags import make_compressed_msg
from pasta_ros.data.imgmsg import image_to_msg_fields
from pasta_ros.ros.convert import byte_array
from pasta_ros.ros.diagnostics import status_name, values_from_status

Stamp = tuple[int, int]


def stamp_of(ns: int) -> Stamp:
    return ns // 1_000_000_000, ns % 1_000_000_000


def image_msg(rgb: np.ndarray, encoding: str, stamp_ns: int, *, row_padding: int = 0,
              is_bigendian: bool = False, frame_id: str = "camera") -> Image:
    """An rclpy ``sensor_msgs/Image`` of ``(H, W, 3) uint8`` RGB in ``encoding``."""
    f = image_to_msg_fields(rgb, encoding, is_bigendian=is_bigendian, row_padding=row_padding)
    msg = Image(encoding=f["encoding"], height=f["height"], width=f["width"], step=f["step"],
                is_bigendian=f["is_bigendian"], data=byte_array(f["data"]))
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_of(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def compressed_msg(rgb: np.ndarray, stamp_ns: int, fmt: str = "png",
                   frame_id: str = "camera") -> CompressedImage:
    """An rclpy ``sensor_msgs/CompressedImage`` (png or jpeg, BGR as image_transport)."""
    ros = make_compressed_msg(rgb, stamp_ns, fmt=fmt, frame_id=frame_id)
    msg = CompressedImage(format=ros.format, data=byte_array(ros.data))
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_of(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


class Outputs:
    """Subscribes to a node's outputs (under ``prefix``, e.g. ``/ns``) and /diagnostics;
    keeps segmentation and instance messages by header stamp, in arrival order too."""

    def __init__(self, client, prefix: str = "", *, overlay: bool = False) -> None:
        self._cond = threading.Condition()
        self.labels: dict[Stamp, Image] = {}
        self.instances: dict[Stamp, InstanceArray] = {}
        self.overlays: dict[Stamp, Image] = {}
        self.arrivals: list[tuple[float, Stamp, str]] = []  # (perf_counter, stamp, model id)
        self.diagnostics: list[dict[str, str]] = []
        self.on_instances: Callable[[InstanceArray, float], None] | None = None
        p = prefix.rstrip("/")
        node = client.node
        self.subs = [
            node.create_subscription(Image, f"{p}/pasta/segmentation", self._on_labels, 50),
            node.create_subscription(InstanceArray, f"{p}/pasta/anomaly_masks", self._on_inst,
                                     50),
            node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)]
        if overlay:
            self.subs.append(node.create_subscription(Image, f"{p}/pasta/overlay",
                                                      self._on_overlay, 50))
        self.node = node
        self.status_name = status_name(f"{p}/pasta_node")

    def clear(self) -> None:
        """Forget the frames received so far (diagnostics are kept)."""
        with self._cond:
            self.labels.clear()
            self.instances.clear()
            self.overlays.clear()

    def wait_matched(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until every output topic has a publisher matched or, on distros
        without ``get_publisher_count``, known in the graph; then outputs are not missed."""
        deadline = time.monotonic() + timeout
        for sub in self.subs:
            while (sub.get_publisher_count() if hasattr(sub, "get_publisher_count")
                   else self.node.count_publishers(sub.topic_name)) == 0:
                if time.monotonic() > deadline:
                    raise PastaError(f"no publisher on {sub.topic_name} within {timeout} s")
                time.sleep(0.02)

    @staticmethod
    def _key(msg) -> Stamp:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def _on_labels(self, msg: Image) -> None:
        with self._cond:
            self.labels[self._key(msg)] = msg
            self._cond.notify_all()

    def _on_inst(self, msg: InstanceArray) -> None:
        t = time.perf_counter()
        with self._cond:
            self.instances[self._key(msg)] = msg
            self.arrivals.append((t, self._key(msg), msg.model_id))
            self._cond.notify_all()
        if self.on_instances is not None:
            self.on_instances(msg, t)

    def _on_overlay(self, msg: Image) -> None:
        with self._cond:
            self.overlays[self._key(msg)] = msg
            self._cond.notify_all()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                with self._cond:
                    self.diagnostics.append(values_from_status(status) | {
                        "level": str(status.level[0]), "message": status.message,
                        "hardware_id": status.hardware_id})
                    self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate()`` holds; it runs under the lock."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_frame(self, stamp: Stamp, timeout: float) -> tuple[Image, InstanceArray]:
        """Both outputs of the frame with header ``stamp``; PastaError after ``timeout`` s."""
        if not self.wait(lambda: stamp in self.labels and stamp in self.instances, timeout):
            raise PastaError(f"no output for the frame stamped {stamp} within {timeout} s")
        with self._cond:
            return self.labels[stamp], self.instances[stamp]

    def wait_diagnostics(self, predicate: Callable[[dict[str, Any]], bool],
                         timeout: float) -> dict[str, Any]:
        """The first diagnostics report (typed values) after now that satisfies
        ``predicate``; PastaError with the last report after ``timeout`` s."""
        with self._cond:
            start = len(self.diagnostics)
        found: list[dict[str, Any]] = []

        def check() -> bool:
            for raw in self.diagnostics[start:]:
                values = typed(raw)
                if predicate(values):
                    found.append(values)
                    return True
            return False

        if not self.wait(check, timeout):
            last = self.diagnostics[-1] if self.diagnostics else None
            raise PastaError(f"diagnostics condition not met within {timeout} s; last: {last}")
        return found[0]


def typed(values: dict[str, str]) -> dict[str, Any]:
    """Diagnostics KeyValues with numbers and booleans parsed."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if v in ("True", "False"):
            out[k] = v == "True"
        else:
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
    return out


def wait_subscribed(pub, timeout: float) -> None:
    """Wait (bounded) until the publisher has a subscriber; PastaError otherwise."""
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise PastaError(f"nobody subscribed to {pub.topic_name} within {timeout} s")
        time.sleep(0.02)


def set_parameters(client, node_name: str, values: dict[str, Any], timeout: float = 10.0):
    """Call ``<node_name>/set_parameters``; returns the list of SetParametersResult."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                            for k, v in values.items()])
    return client.call(SetParameters, f"{node_name}/set_parameters", req, timeout).results


def get_parameters(client, node_name: str, names: list[str], timeout: float = 10.0) -> dict:
    """Call ``<node_name>/get_parameters``; returns ``{name: python value}``."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    res = client.call(GetParameters, f"{node_name}/get_parameters",
                      GetParameters.Request(names=names), timeout)
    return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}


class RosSession:
    """This process's side of a test/demo: a leased domain id with loopback-only discovery
    (set in os.environ, restored by :meth:`close`) and a :class:`ClientNode` in it."""

    def __init__(self, name: str = "pasta_client",
                 extra_env: dict[str, str] | None = None) -> None:
        from pasta_ros.ros.clients import ClientNode
        from pasta_ros.ros.process import DomainLease, ros_env

        self.lease = DomainLease()
        self.domain_id = self.lease.domain_id
        extra = dict(extra_env or {})
        self.env = ros_env(self.domain_id) | extra
        keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOCALHOST_ONLY", *extra)
        self._saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: self.env[k] for k in keys if k != "ROS_LOCALHOST_ONLY"})
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
        self.client = ClientNode(name, domain_id=self.domain_id)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            for k, v in self._saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.lease.release()


@contextmanager
def running_node(session: RosSession, ros_args: list[str], log_path, *,
                 namespace: str = "", ready_timeout: float = 120.0) -> Iterator:
    """Start pasta_node with ``ros_args`` in ``session``'s domain, wait until it serves
    ``<namespace>/pasta/recalibrate``, yield the NodeProcess, and always end it."""
    from pasta_ros.ros.process import NodeProcess

    node = NodeProcess(ros_args, session.env, log_path).start()
    try:
        node.wait_ready(session.client, f"{namespace.rstrip('/')}/pasta/recalibrate",
                        timeout=ready_timeout)
        yield node
    finally:
        node.stop()


def handshake(camera, outputs: Outputs, make_msg: Callable[[int], Any],
              timeout: float = 60.0) -> None:
    """Publish a frame every 0.5 s until one comes out (bounded): DDS matching is complete in
    both directions afterwards, so no later frame is lost to discovery. ``make_msg(stamp_ns)``
    builds a frame; stamps count down from 2**31 s, away from the caller's."""
    wait_subscribed(camera, timeout)
    deadline = time.monotonic() + timeout
    for k in itertools.count():
        stamp_ns = (2**31 - 1 - k) * 1_000_000_000
        camera.publish(make_msg(stamp_ns))
        try:
            outputs.wait_frame(stamp_of(stamp_ns), min(0.5 + k * 0.25, 3.0))
            return
        except PastaError:
            if time.monotonic() > deadline:
                raise PastaError(f"no output from the node within {timeout} s") from None
