"""pasta_lifecycle_node over real DDS: configure / activate / deactivate / cleanup / shutdown,
outputs only while active, a failed configure and out-of-order transitions answered while the
node stays up."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("pasta_msgs.msg")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from pasta_ros.core.errors import PastaError  # noqa: E402
from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.ros.process import NodeProcess  # noqa: E402
from pasta_ros.testing.ros_session import Outputs, handshake, image_msg  # noqa: E402

NS = "/lc"
NODE = f"{NS}/pasta_node"
CAMERA = "/test/lifecycle/image"


def change(ros, transition: int) -> bool:
    req = ChangeState.Request()
    req.transition.id = transition
    return ros.client.call(ChangeState, f"{NODE}/change_state", req, 120.0).success


def state(ros) -> int:
    return ros.client.call(GetState, f"{NODE}/get_state", GetState.Request(),
                           30.0).current_state.id


@pytest.fixture(scope="module")
def managed(ros, tmp_path_factory):
    """The lifecycle node with a model_dir that does not exist yet (set before configure)."""
    out = tmp_path_factory.mktemp("lifecycle")
    args = ["-r", "__node:=pasta_node", "-r", f"__ns:={NS}", "-r", f"image:={CAMERA}",
            "-p", f"model_dir:={out / 'missing'}", "-p", f"models_root:={out / 'models'}",
            "-p", "diagnostics_period:=0.2"]
    proc = NodeProcess(args, ros.env, out / "node.log",
                       module="pasta_ros.ros.lifecycle_node").start()
    proc.model_dir = out / "missing"
    try:
        proc.wait_ready(ros.client, f"{NODE}/get_state", timeout=120.0, srv_type=GetState)
        yield proc
    finally:
        proc.stop()


def test_the_life_cycle_in_order_with_outputs_only_while_active(ros, managed, tiny_model):
    import shutil

    assert state(ros) == State.PRIMARY_STATE_UNCONFIGURED
    # out of order: activate before configure is refused, the node stays up
    assert not change(ros, Transition.TRANSITION_ACTIVATE)
    # a model that is not there: configure fails with the reason in the log, still up
    assert not change(ros, Transition.TRANSITION_CONFIGURE)
    assert state(ros) == State.PRIMARY_STATE_UNCONFIGURED and managed.alive()
    expected = f"configure failed: {managed.model_dir} is not a PASTA model"
    assert expected in managed.log_tail(50)
    # the model arrives (e.g. copied by the cell's provisioning); configure now succeeds
    shutil.copytree(tiny_model, managed.model_dir)

    t0 = time.monotonic()
    assert change(ros, Transition.TRANSITION_CONFIGURE)
    assert state(ros) == State.PRIMARY_STATE_INACTIVE
    out = Outputs(ros.client, NS)
    camera = ros.client.node.create_publisher(Image, CAMERA, 10)
    rgb, _, _ = render_scene("steel", np.random.default_rng(2), 224, 128, 4, 1)
    assert change(ros, Transition.TRANSITION_ACTIVATE)
    assert state(ros) == State.PRIMARY_STATE_ACTIVE
    out.wait_matched(30.0)
    handshake(camera, out, lambda ns: image_msg(rgb, "rgb8", ns))
    camera.publish(image_msg(rgb, "rgb8", 9_000_000_001))
    _, inst = out.wait_frame((9, 1), 30.0)
    assert inst.model_id
    configure_to_output = time.monotonic() - t0

    assert change(ros, Transition.TRANSITION_DEACTIVATE)
    assert state(ros) == State.PRIMARY_STATE_INACTIVE
    camera.publish(image_msg(rgb, "rgb8", 9_000_000_002))
    with pytest.raises(PastaError):  # nothing comes out while inactive
        out.wait_frame((9, 2), 3.0)
    assert change(ros, Transition.TRANSITION_CLEANUP)
    assert state(ros) == State.PRIMARY_STATE_UNCONFIGURED
    # and up again, as a cell restarting its pipeline would
    assert change(ros, Transition.TRANSITION_CONFIGURE)
    assert change(ros, Transition.TRANSITION_ACTIVATE)
    handshake(camera, out, lambda ns: image_msg(rgb, "rgb8", ns))
    assert change(ros, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert state(ros) == State.PRIMARY_STATE_FINALIZED and managed.alive()
    assert configure_to_output < 120.0
