"""iCAS in pasta_node over real DDS: /pasta/set_prompts, the icas_mode parameter, diagnostics.

A node process with a tiny random iCAS checkpoint (the shipped one works the same way, only
slower); this process is camera, planner and service client. Loopback discovery, a leased
domain id, bounded waits, the node always ended.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import require_ros

rclpy = require_ros()

from sensor_msgs.msg import Image  # noqa: E402

from pasta_msgs.srv import SetPrompts  # noqa: E402
from pasta_ros.core.icas.model import ICASModel, default_arch, save_checkpoint  # noqa: E402
from pasta_ros.data.bags import write_bag_images  # noqa: E402
from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.ros.convert import labels_from_msg  # noqa: E402
from pasta_ros.testing.ros_session import (  # noqa: E402
    Outputs,
    handshake,
    image_msg,
    running_node,
    set_parameters,
)

NS = "/icas"
TOPIC = "/icas_test/camera/image"
SERVICE = f"{NS}/pasta/set_prompts"
W, H = 224, 128
_stamps = itertools.count(3_000_000_000_000)


def scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rgb, labels, _ = render_scene("steel", np.random.default_rng(seed), W, H, 4, 2)
    return rgb, labels


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A tiny iCAS checkpoint, prompt image files with a mask, and a prompt bag."""
    root = tmp_path_factory.mktemp("icas_node")
    torch.manual_seed(0)
    arch = default_arch(tiny=True, input_size=(64, 64), layers=1, queries=8, hidden=32,
                        mask_dim=16, ffn=64)
    ckpt = save_checkpoint(root / "tiny_icas.pt", ICASModel(arch), stage="anomaly", step=0)
    out = {"ckpt": ckpt, "root": root, "normal": []}
    for s in (50, 51, 52):
        path = root / f"normal_{s}.png"
        cv2.imwrite(str(path), cv2.cvtColor(scene(s)[0], cv2.COLOR_RGB2BGR))
        out["normal"].append(str(path))
    rgb, labels = scene(53)
    out["anomaly"], out["mask"] = str(root / "anomaly.png"), str(root / "mask.png")
    cv2.imwrite(out["anomaly"], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(out["mask"], ((labels == 2) * 255).astype(np.uint8))
    out["small_png"] = str(root / "small.png")  # a mask of another size than the images
    cv2.imwrite(out["small_png"], np.full((10, 10), 255, np.uint8))
    out["bag"] = root / "prompt_bag"
    write_bag_images(out["bag"], "/prompt/image", [scene(s)[0] for s in range(60, 64)])
    return out


@pytest.fixture(scope="module")
def node(ros, tiny_model: Path, files):
    args = ["-r", "__node:=pasta_node", "-r", f"__ns:={NS}", "-r", f"image:={TOPIC}",
            "-p", f"model_dir:={tiny_model}", "-p", f"models_root:={files['root'] / 'models'}",
            "-p", "diagnostics_period:=0.2", "-p", "icas_mode:=combine",
            "-p", f"icas_checkpoint:={files['ckpt']}", "-p", "icas_threshold:=0.3"]
    with running_node(ros, args, files["root"] / "node.log", namespace=NS) as proc:
        yield proc


@pytest.fixture(scope="module")
def outputs(ros, node) -> Outputs:
    out = Outputs(ros.client, NS)
    out.wait_matched(30.0)
    return out


@pytest.fixture(scope="module")
def camera(ros, outputs):
    pub = ros.client.node.create_publisher(Image, TOPIC, 10)
    handshake(pub, outputs, lambda ns: image_msg(scene(0)[0], "rgb8", ns))
    return pub


def call(ros, **fields) -> SetPrompts.Response:
    return ros.client.call(SetPrompts, SERVICE, SetPrompts.Request(**fields), 60.0)


def labels_of(camera, outputs: Outputs, rgb: np.ndarray) -> np.ndarray:
    msg = image_msg(rgb, "rgb8", next(_stamps) * 1000)
    camera.publish(msg)
    labels, _ = outputs.wait_frame((msg.header.stamp.sec, msg.header.stamp.nanosec), 30.0)
    return labels_from_msg(labels)


def test_prompts_are_set_used_and_cleared(ros, camera, outputs, files):
    v = outputs.wait_diagnostics(lambda v: True, 20.0)
    assert (v["icas_mode"], v["normal_shots"], v["anomaly_prompt"]) == ("combine", 0, False)
    rgb, _ = scene(7)
    plain = labels_of(camera, outputs, rgb)  # no prompt yet: PASTA's vote alone
    assert outputs.wait_diagnostics(lambda v: True, 20.0)["vote"] == "pasta"

    res = call(ros, action="normal", image_files=files["normal"])
    assert res.success, res.message
    assert (res.normal_shots, res.anomaly_prompt) == (3, False)
    res = call(ros, action="anomaly", image_files=[files["anomaly"]], mask_file=files["mask"])
    assert res.success and (res.normal_shots, res.anomaly_prompt) == (3, True), res.message

    both = labels_of(camera, outputs, rgb)
    # a report built just before that frame may still arrive: wait for the new vote
    v = outputs.wait_diagnostics(lambda v: v["vote"] == "pasta+icas", 20.0)
    assert v["anomaly_prompt"] is True and v["normal_shots"] == 3
    # combine: same objects; every PASTA anomaly stays one, iCAS can only add anomalies
    np.testing.assert_array_equal(both > 0, plain > 0)
    assert np.all(both[plain == 2] == 2)

    (r,) = set_parameters(ros.client, f"{NS}/pasta_node", {"icas_mode": "off"})
    assert r.successful
    np.testing.assert_array_equal(labels_of(camera, outputs, rgb), plain)
    (r,) = set_parameters(ros.client, f"{NS}/pasta_node", {"icas_mode": "combine"})
    assert r.successful

    res = call(ros, action="clear")
    assert res.success and (res.normal_shots, res.anomaly_prompt) == (0, False)
    np.testing.assert_array_equal(labels_of(camera, outputs, rgb), plain)


def test_prompts_from_a_bag(ros, camera, outputs, files):
    res = call(ros, action="normal", bag=str(files["bag"]), image_topic="/prompt/image",
               max_images=2)
    assert res.success and res.normal_shots == 2, res.message
    res = call(ros, action="anomaly", bag=str(files["bag"]), image_topic="/prompt/image",
               points=[40.0, 60.0, 120.0, 64.0])
    assert res.success and res.anomaly_prompt, res.message
    assert call(ros, action="clear").success


def test_bad_prompt_calls_are_refused_and_keep_the_prompts(ros, camera, outputs, files):
    assert call(ros, action="normal", image_files=files["normal"][:2]).success
    bad = [
        ({"action": "sideways"}, "action must be one of"),
        ({"action": "normal"}, "needs prompt images"),
        ({"action": "normal", "image_files": [str(files["root"] / "nope.png")]}, "not found"),
        ({"action": "anomaly", "image_files": [files["anomaly"]],
          "mask_file": files["normal"][0], "points": [1.0]}, "not both"),
        ({"action": "anomaly", "image_files": [files["anomaly"]]}, "needs mask_file"),
        ({"action": "normal", "bag": str(files["bag"]), "image_topic": "/nothing"}, "/nothing"),
        ({"action": "normal", "bag": str(files["root"] / "no_bag")}, "no_bag"),
    ]
    for fields, expected in bad:
        res = call(ros, **fields)
        assert not res.success and expected in res.message, (fields, res.message)
        assert (res.normal_shots, res.anomaly_prompt) == (2, False)
    assert call(ros, action="clear").success


def test_icas_parameters_are_validated(ros, outputs):
    name = f"{NS}/pasta_node"
    for values, word in (({"icas_mode": "sometimes"}, "icas_mode"),
                         ({"icas_threshold": 0.0}, "icas_threshold"),
                         ({"icas_threshold": 1.5}, "icas_threshold")):
        (res,) = set_parameters(ros.client, name, values)
        assert not res.successful and word in res.reason, res.reason
    assert outputs.wait_diagnostics(lambda v: True, 20.0)["icas_mode"] == "combine"


def test_pasta_prompts_command(ros, outputs, files):
    import argparse

    from pasta_ros.cli.ros import cmd_prompts, register
    from pasta_ros.core.errors import PastaError

    def cli(argv):
        ap = argparse.ArgumentParser()
        register(ap.add_subparsers(dest="command", required=True))
        return ap.parse_args(argv + ["--service", SERVICE, "--timeout", "60"])

    out = cmd_prompts(cli(["prompts", "--normal", *files["normal"]]))
    assert out["normal_shots"] == 3 and not out["anomaly_prompt"]
    out = cmd_prompts(cli(["prompts", "--anomaly", files["anomaly"], "--points", "40,60;120,64",
                           "--boxes", "10,10,30,30"]))
    assert out["anomaly_prompt"] and out["normal_shots"] == 3
    out = cmd_prompts(cli(["prompts", "--anomaly-bag", str(files["bag"]), "--topic",
                           "/prompt/image", "--mask", files["mask"]]))
    assert out["anomaly_prompt"]
    with pytest.raises(PastaError, match="same size"):
        cmd_prompts(cli(["prompts", "--anomaly", files["anomaly"], "--mask",
                         files["small_png"]]))
    out = cmd_prompts(cli(["prompts", "--clear", "normal"]))
    assert (out["normal_shots"], out["anomaly_prompt"]) == (0, True)
    assert cmd_prompts(cli(["prompts", "--clear", "all"]))["anomaly_prompt"] is False


def test_negative_clicks_over_dds(ros, camera, outputs, files):
    res = call(ros, action="anomaly", image_files=[files["anomaly"]], points=[40.0, 60.0],
               negative_points=[120.0, 64.0, 10.0, 10.0])
    assert res.success and res.anomaly_prompt and "2 negative click(s)" in res.message
    res = call(ros, action="anomaly", image_files=[files["anomaly"]], points=[40.0, 60.0],
               negative_points=[40.0, 60.0])  # the negative disk covers the only positive one
    assert not res.success and "outside the negative clicks" in res.message
    assert res.anomaly_prompt  # the previous prompt is kept
    assert call(ros, action="clear").success
