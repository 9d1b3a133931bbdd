"""The node's executor: the camera's callbacks in the spinning thread, the others in a pool.

rclpy's ``MultiThreadedExecutor`` hands every callback, the camera's 30 Hz images included, to
a thread pool and rebuilds its wait set in Python after each hand-off. Measured in pasta_node
under a 30 Hz 1280x720 camera (BENCHMARKS.md, issue #12): its spinning thread used 60-85 % of
a core and left the inference thread 15-40 %, so fewer than half the frames that a free core
could segment came out. This executor runs callbacks in the thread that spins (as
``SingleThreadedExecutor`` does) except those of the callback groups it is told to pool and
executor tasks (an action's execute coroutine, done callbacks), which go to a pool of
``threads`` workers. pasta_node pools everything but the camera: its blocking group
(recalibration, prompt encoding, model selection: seconds to minutes) and its default group
(diagnostics timer, parameters, life-cycle transitions), so the camera is served while they
run and only its 30 Hz callbacks skip the hand-off. Exceptions of pooled callbacks are raised
in the spinning thread on a later :meth:`spin_once`, as ``MultiThreadedExecutor`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from rclpy.callback_groups import CallbackGroup
from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)


class InlineExecutor(Executor):
    """Callbacks inline, except those of the ``blocking`` groups and executor tasks (a pool
    of ``threads``)."""

    def __init__(self, blocking: Iterable[CallbackGroup] = (), threads: int = 2, *,
                 context=None) -> None:
        super().__init__(context=context)
        self._blocking = list(blocking)
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="pasta-callback")
        self._pending: list = []  # rclpy Tasks handed to the pool, until done

    def _pooled(self, entity) -> bool:
        group = getattr(entity, "callback_group", None)
        return entity is None or any(group is g for g in self._blocking)

    def _spin_once_impl(self, timeout_sec=None,
                        wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, entity, _node = self.wait_for_ready_callbacks(timeout_sec, None,
                                                                   wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            pass
        else:
            if self._pooled(entity):
                self._pool.submit(handler)
                self._pending.append(handler)
            else:
                handler()
                handler.result()  # raises the callback's exception, if any
        self._raise_finished()

    def _raise_finished(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for task in done:
            task.result()  # the callback's exception, raised here

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec)

    def spin_once_until_future_complete(self, future, timeout_sec=None) -> None:
        future.add_done_callback(lambda _: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop (as :meth:`Executor.shutdown`), then end the pool's workers."""
        done = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=timeout_sec is None, cancel_futures=True)
        return done
