"""``pasta_lifecycle_node``: pasta_node as a managed (lifecycle) node, for cells that bring
their nodes up in order. All behaviour is :class:`~pasta_ros.ros.node.PastaNodeMixin`'s:

- configure: load the model (newest good one, as pasta_node does), the iCAS checkpoint when
  ``icas_mode`` is not off, and prepare the backends; a bad model fails the transition with
  the reason in the log (the node stays up, unconfigured);
- activate: the subscriptions, publishers, services, the recalibration action, diagnostics and
  the inference thread come up;
- deactivate: they are released (the inference thread ends after its current frame);
- cleanup: the model is released; shutdown: both, from whichever state.

Parameters are declared at construction, so they can be set before configure.
Run: ``pasta_lifecycle_node --ros-args --params-file config/sorter.yaml -p model_dir:=MODEL``,
then drive it with ``ros2 lifecycle set /pasta_node configure`` / ``activate``.
"""

from __future__ import annotations

import sys
import threading

from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from pasta_ros.core.errors import USER_ERRORS
from pasta_ros.ros.node import PastaNodeMixin, spin_until_stopped

RCLError = rclpy_implementation.RCLError


class ManagedPastaNode(PastaNodeMixin, LifecycleNode):
    """pasta_node with the ROS 2 managed-node life cycle."""

    def __init__(self, stop: threading.Event) -> None:
        LifecycleNode.__init__(self, "pasta_node")
        self.init_pasta(stop)
        # rclpy raises (and never answers) on a transition the current state does not have;
        # answer success=false with the reason instead
        original = self._service_change_state.callback

        def change_state(req, resp):
            try:
                return original(req, resp)
            except RCLError:
                state = self._state_machine.current_state[1]
                self.get_logger().warning(
                    f"lifecycle transition {req.transition.label or req.transition.id} refused: "
                    f"not available in state {state}")
                resp.success = False
                return resp

        self._service_change_state.callback = change_state

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure()
        except USER_ERRORS as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        self.cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pasta_lifecycle_node``: starts unconfigured; exit 0 on SIGINT/SIGTERM."""
    return spin_until_stopped(ManagedPastaNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
