"""The node's executor (pasta_ros/ros/executor.py) over real DDS in one process: fast callbacks
run in the spinning thread, callbacks of a blocking group in the pool, a blocked callback never
stops the camera's, and pooled exceptions reach the spinning thread."""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import require_ros

require_ros()

import rclpy  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from pasta_ros.ros.executor import InlineExecutor  # noqa: E402
from pasta_ros.ros.process import DomainLease, ros_env  # noqa: E402

KEYS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")


@pytest.fixture()
def ros_node():
    """A node in its own context on a leased domain (loopback discovery), and its executor."""
    lease = DomainLease()
    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update({k: ros_env(lease.domain_id)[k] for k in KEYS})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=lease.domain_id)
    node = rclpy.create_node("executor_test", context=context)
    blocking = ReentrantCallbackGroup()
    executor = InlineExecutor(blocking=[blocking], threads=2, context=context)
    executor.add_node(node)
    try:
        yield node, blocking, executor
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        lease.release()


def spin_until(executor, predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.05)
    return True


def test_camera_callbacks_inline_and_served_while_a_blocking_callback_runs(ros_node):
    node, blocking, executor = ros_node
    spinner = threading.get_ident()
    received: list[tuple[str, int]] = []
    node.create_subscription(
        String, "cam", lambda m: received.append((m.data, threading.get_ident())), 10)
    release, entered, left = threading.Event(), threading.Event(), threading.Event()
    pool_thread: list[int] = []

    def slow() -> None:  # a recalibration: holds its worker until released
        timer.cancel()
        pool_thread.append(threading.get_ident())
        entered.set()
        release.wait(30.0)
        left.set()

    timer = node.create_timer(0.01, slow, callback_group=blocking)
    pub = node.create_publisher(String, "cam", 10)
    assert spin_until(executor, entered.is_set)
    assert pool_thread[0] != spinner
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    for i in range(5):  # the blocking callback is still running: the camera is served
        pub.publish(String(data=str(i)))
    assert spin_until(executor, lambda: len(received) == 5)
    assert not left.is_set()
    assert [d for d, _ in received] == ["0", "1", "2", "3", "4"]
    assert {t for _, t in received} == {spinner}
    release.set()
    assert spin_until(executor, left.is_set)


def test_pooled_exception_is_raised_in_the_spinning_thread(ros_node):
    node, blocking, executor = ros_node

    def fail() -> None:
        timer.cancel()
        raise ValueError("recalibration broke")

    timer = node.create_timer(0.01, fail, callback_group=blocking)
    with pytest.raises(ValueError, match="recalibration broke"):
        spin_until(executor, lambda: False, timeout=10.0)


def test_inline_exception_is_raised_by_spin_once(ros_node):
    node, _blocking, executor = ros_node

    def fail() -> None:
        timer.cancel()
        raise KeyError("bad frame")

    timer = node.create_timer(0.01, fail)
    with pytest.raises(KeyError, match="bad frame"):
        spin_until(executor, lambda: False, timeout=10.0)
