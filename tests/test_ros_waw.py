"""pasta_node running a WaW model over real DDS: the node runs whichever method its model holds.

Every process runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a leased domain id; every
wait is bounded; the node process is always ended (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_main, require_ros

rclpy = require_ros()

from sensor_msgs.msg import Image  # noqa: E402

from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.ros.convert import labels_from_msg  # noqa: E402
from pasta_ros.testing.ros_session import (  # noqa: E402
    Outputs,
    handshake,
    image_msg,
    running_node,
    stamp_of,
)

NS = "/waw"
TOPIC = "/test_waw/camera/image"
W, H = 224, 128


def plants(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rgb, labels, _ = render_scene("plants", np.random.default_rng(seed), W, H, 4, 2)
    return rgb, labels


@pytest.fixture(scope="module")
def waw_model(tmp_path_factory) -> Path:
    from pasta_ros.data.synth import generate

    data = generate("plants", tmp_path_factory.mktemp("plants"), seed=1, width=W, height=H,
                    n_baseline=8, n_reference=6, n_empty=0, n_test=2)
    out = tmp_path_factory.mktemp("waw_model") / "model"
    code, stdout, err = cli_main(["-q", "calibrate", "--method", "waw", "--baseline",
                                  data.baseline, "--reference", data.reference, "--out", out,
                                  "--input-size", f"{W}x{H}", "--device", "cpu", "--backend",
                                  "torch", "--waw-k-sphere", "3", "--waw-k-v", "3",
                                  "--min-area", "20"])  # tiny images: small plants
    assert code == 0, err
    assert json.loads(stdout)["model_id"].startswith("waw-")
    return out


def test_the_node_segments_with_a_waw_model_and_survives_a_grayscale_frame(ros, waw_model,
                                                                          tmp_path):
    args = ["-r", "__node:=pasta_node", "-r", f"__ns:={NS}", "-r", f"image:={TOPIC}",
            "-p", f"model_dir:={waw_model}", "-p", f"models_root:={tmp_path / 'models'}",
            "-p", "backend:=torch", "-p", "device:=cpu", "-p", "diagnostics_period:=0.2",
            "-p", "qos_depth:=1"]
    with running_node(ros, args, tmp_path / "node.log", namespace=NS) as node:
        outputs = Outputs(ros.client, NS)
        outputs.wait_matched(30.0)
        camera = ros.client.node.create_publisher(Image, TOPIC, 10)
        rgb, truth = plants(5)
        handshake(camera, outputs, lambda ns: image_msg(rgb, "rgb8", ns))
        stamp = 1_000_000_000_123
        camera.publish(image_msg(rgb, "rgb8", stamp))
        labels_msg, inst = outputs.wait_frame(stamp_of(stamp), 30.0)
        assert inst.model_id.startswith("waw-")
        labels = labels_from_msg(labels_msg)
        assert set(np.unique(labels)) <= {0, 1, 2}
        plant = truth > 0
        assert (labels[plant] > 0).mean() > 0.5, "ExG + points find most plant pixels"
        assert (labels[~plant] == 0).mean() > 0.95
        assert inst.instances and all(i.class_id in (1, 2) for i in inst.instances)
        # a mono camera frame: ExG cannot run; the node logs it, counts it bad, keeps going
        before = outputs.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 20.0)
        camera.publish(image_msg(rgb, "mono8", 2_000_000_000_123))
        outputs.wait_diagnostics(lambda v: v["frames_bad"] == before["frames_bad"] + 1, 20.0)
        camera.publish(image_msg(rgb, "rgb8", 3_000_000_000_123))
        outputs.wait_frame(stamp_of(3_000_000_000_123), 30.0)
        assert node.alive()
    assert "grayscale" in (tmp_path / "node.log").read_text()
