"""launch/sorter.launch.py starts pasta_node: its arguments, read from the file itself.

``ros2 launch`` cannot run here (launch/launch_ros are not installable), so the launch file is
parsed with ast and pasta_node is started with exactly the --ros-args launch_ros would pass
(params files, remaps, namespace, node name); ``python -m pasta_ros.ros.node`` stands in for
the ``pasta_node`` console script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import require_ros

require_ros()

from sensor_msgs.msg import Image  # noqa: E402

from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.testing.launch_args import (  # noqa: E402
    launch_environment,
    node_command,
    read_launch_file,
)
from pasta_ros.testing.ros_session import (  # noqa: E402
    Outputs,
    RosSession,
    get_parameters,
    handshake,
    image_msg,
    running_node,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "sorter.launch.py"


def test_every_launch_argument_is_declared_with_a_description():
    spec = read_launch_file(LAUNCH)
    assert set(spec.arguments) == {"config", "image_topic", "model_dir", "namespace",
                                   "dds_profile"}
    assert all(len(d) > 20 for d in spec.descriptions.values()), spec.descriptions
    executable, args = node_command(LAUNCH, {}, ROOT, "/tmp")
    assert executable == "pasta_node"
    assert args[args.index("--params-file") + 1] == str(ROOT / "config" / "sorter.yaml")
    assert "image:=/camera/image_raw" in args
    env = launch_environment(LAUNCH, {}, ROOT)  # the shared-memory profile by default
    profile = ROOT / "config" / "fastdds_shm.xml"
    assert env == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(profile),
                   "FASTDDS_DEFAULT_PROFILES_FILE": str(profile)} and profile.is_file()
    assert set(launch_environment(LAUNCH, {"dds_profile": ""}, ROOT).values()) == {""}


def test_the_launch_files_arguments_start_the_node(tiny_model, tmp_path):
    ns = "cell_launch"
    executable, ros_args = node_command(LAUNCH, {"model_dir": str(tiny_model), "namespace": ns},
                                        share=ROOT, params_dir=tmp_path)
    assert executable == "pasta_node"
    # this process joins with the same profile, as a camera driver of the cell would
    session = RosSession("pasta_test_launch_client", launch_environment(LAUNCH, {}, ROOT))
    try:
        with running_node(session, ros_args, tmp_path / "node.log", namespace=f"/{ns}") as proc:
            name = f"/{ns}/pasta_node"
            params = get_parameters(session.client, name,
                                    ["model_dir", "image_topic", "qos_reliability", "clusters"])
            assert params == {"model_dir": str(tiny_model), "image_topic": "image",
                              "qos_reliability": "best_effort", "clusters": 20}
            out = Outputs(session.client, f"/{ns}")
            out.wait_matched(30.0)
            camera = session.client.node.create_publisher(Image, "/camera/image_raw", 10)
            rgb, _, _ = render_scene("steel", np.random.default_rng(0), 224, 128, 4, 1)
            # the remap: the node listens on the launch file's default camera topic
            handshake(camera, out, lambda ns: image_msg(rgb, "rgb8", ns))
            msg = image_msg(rgb, "rgb8", 5_000_000_123)
            camera.publish(msg)
            labels, inst = out.wait_frame((5, 123), 30.0)
            assert (labels.width, labels.height) == (224, 128) and inst.model_id
            assert proc.alive()
    finally:
        session.close()
