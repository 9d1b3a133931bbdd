"""Many cameras from one camera list: the list file, and two real nodes started with exactly
the arguments launch/cameras.launch.py gives them, each with its own topics and model."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("pasta_msgs.msg")

from sensor_msgs.msg import Image  # noqa: E402

from pasta_ros.core.errors import PastaError  # noqa: E402
from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.ros.cameras import load_cameras  # noqa: E402
from pasta_ros.testing.ros_session import (  # noqa: E402
    Outputs,
    get_parameters,
    handshake,
    image_msg,
    running_node,
)

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def test_the_example_list_loads_with_one_lineage_per_camera():
    cams = load_cameras(ROOT / "config" / "cameras.example.yaml")
    assert [c.namespace for c in cams] == ["cell1", "cell2"]
    assert [c.models_root for c in cams] == ["/models/recalibrated"] * 2
    assert [c.lineage for c in cams] == ["line_a", "line_b"]
    assert cams[1].node_parameters()["vote_threshold"] == 0.15
    args = cams[0].ros_arguments("/c.yaml")
    assert "__ns:=/cell1" in args and "image:=/cell1/camera/image_raw" in args
    assert 'camera_info_topic:="/cell1/camera/camera_info"' in args


@pytest.mark.parametrize("text, message", [
    ("cameras: []", "at least one camera"),
    ("cameras:\n  - {namespace: a, image_topic: /x}", "give model_dir"),
    ("cameras:\n  - {namespace: a, image_topic: /x, model_dir: m, color: red}",
     "unknown key(s) color"),
    ("cameras:\n  - {namespace: 'a b', image_topic: /x, model_dir: m}", "letters, digits"),
    ("cameras:\n  - {namespace: a, image_topic: /x, model_dir: m}\n"
     "  - {namespace: a, image_topic: /y, model_dir: n}", "share the namespace a"),
    ("cameras:\n  - {namespace: a, image_topic: /x, model_dir: m, lineage: l}\n"
     "  - {namespace: b, image_topic: /y, model_dir: n, lineage: l}", "share the lineage l"),
])
def test_bad_camera_lists_name_the_entry_and_the_fix(tmp_path, text, message):
    with pytest.raises(PastaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_cameras(_write(tmp_path, text))


@pytest.fixture(scope="module")
def second_model(tiny_steel, tmp_path_factory) -> Path:
    from conftest import TINY_SIZE, cli_main

    out = tmp_path_factory.mktemp("second_model") / "model"
    code, _, err = cli_main(["-q", "calibrate", "--baseline", tiny_steel.baseline,
                             "--reference", tiny_steel.reference, "--empty", tiny_steel.empty,
                             "--out", out, "--input-size", f"{TINY_SIZE[0]}x{TINY_SIZE[1]}",
                             "--clusters", "6", "--seed", "1", "--device", "cpu"])
    assert code == 0, err
    return out


def test_two_cameras_from_one_list_each_with_its_own_outputs_and_model(
        ros, tiny_model, second_model, tmp_path):
    import json

    ids = {m: json.loads((m / "manifest.json").read_text())["model_id"]
           for m in (tiny_model, second_model)}
    assert len(set(ids.values())) == 2
    path = _write(tmp_path, f"""
cameras:
  - {{namespace: cam_a, image_topic: /multi/a/image, model_dir: {tiny_model}}}
  - {{namespace: cam_b, image_topic: /multi/b/image, model_dir: {second_model},
     lineage: line_b, parameters: {{vote_threshold: 0.2}}}}
models_base: {tmp_path / 'store'}
""")
    cams = load_cameras(path)
    rgb, _, _ = render_scene("steel", np.random.default_rng(3), 224, 128, 4, 1)
    with contextlib.ExitStack() as stack:
        for cam in cams:
            stack.enter_context(running_node(
                ros, cam.ros_arguments(ROOT / "config" / "sorter.yaml"),
                tmp_path / f"{cam.namespace}.log", namespace=f"/{cam.namespace}"))
        for cam, model in zip(cams, (tiny_model, second_model)):
            out = Outputs(ros.client, f"/{cam.namespace}")
            out.wait_matched(30.0)
            pub = ros.client.node.create_publisher(Image, cam.image_topic, 10)
            handshake(pub, out, lambda ns: image_msg(rgb, "rgb8", ns))
            pub.publish(image_msg(rgb, "rgb8", 7_000_000_011))
            _, inst = out.wait_frame((7, 11), 30.0)
            assert inst.model_id == ids[model], cam.namespace
            params = get_parameters(ros.client, f"/{cam.namespace}/pasta_node",
                                    ["models_root", "lineage", "vote_threshold"])
            assert params["models_root"] == cam.models_root
            assert params["lineage"] == cam.lineage
            assert params["vote_threshold"] == (0.2 if cam.namespace == "cam_b" else 0.1)
