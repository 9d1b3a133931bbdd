"""The serialized InstanceArray and mono8 Image writers give rclpy's messages, field for field."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_ros

require_ros()

from rclpy.serialization import deserialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from pasta_msgs.msg import InstanceArray  # noqa: E402
from pasta_ros.core.fusion import fuse  # noqa: E402
from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.ros import convert  # noqa: E402
from pasta_ros.ros.cdr import (  # noqa: E402
    ENCAPSULATION,
    instance_array_cdr,
    matches_rclpy,
    mono8_cdr,
    same_message,
    stamp_processing_time,
)


def _scene(seed: int, width: int = 320, height: int = 180):
    """Instances of a rendered steel scene, a random half of them voted anomalies."""
    rng = np.random.default_rng(seed)
    _, _, ids = render_scene("steel", rng, width, height, 6, 2)
    patches = rng.random((height // 8, width // 8)) < 0.3
    return fuse(ids, patches).instances


def _header(sec: int, nanosec: int, frame_id: str) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


@pytest.mark.parametrize("vertices", [32, 3, 0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_give_rclpy_s_message(seed, vertices):
    instances = _scene(seed)
    assert instances  # the scene holds objects
    frame_id = ["camera_optical", "", "a" * 7][seed]  # string lengths 14, 0, 7: all paddings
    header = _header(1_700_000_000 + seed, 999_999_999 - seed, frame_id)
    msg = convert.instance_array(instances, header, 320, 180, f"model-{seed}", vertices)
    msg.processing_time_ms = 37.25
    raw, at = instance_array_cdr(instances, (header.stamp.sec, header.stamp.nanosec),
                                 frame_id, 320, 180, f"model-{seed}", vertices)
    stamp_processing_time(raw, at, 37.25)
    assert bytes(raw[:4]) == ENCAPSULATION
    assert same_message(bytes(raw), msg)
    back = deserialize_message(bytes(raw), InstanceArray)
    assert back.processing_time_ms == 37.25 and len(back.instances) == len(instances)
    for got, inst in zip(back.instances, instances):  # the mask crop survives the trip
        np.testing.assert_array_equal(convert.mask_from_msg(got), inst.mask)


def test_an_empty_frame_and_the_probe_match():
    raw, at = instance_array_cdr([], (3, 4), "cam", 64, 48, "m")
    stamp_processing_time(raw, at, 1.5)
    msg = convert.instance_array([], _header(3, 4, "cam"), 64, 48, "m")
    msg.processing_time_ms = 1.5
    assert same_message(bytes(raw), msg)
    assert matches_rclpy() and matches_rclpy(0)


def test_a_changed_field_is_caught():
    instances = _scene(4)
    header = _header(10, 20, "cam")
    msg = convert.instance_array(instances, header, 320, 180, "m")
    raw, at = instance_array_cdr(instances, (10, 20), "cam", 320, 180, "m")
    assert same_message(bytes(raw), msg)  # processing_time_ms 0 on both
    stamp_processing_time(raw, at, 2.0)
    assert not same_message(bytes(raw), msg)
    raw2, _ = instance_array_cdr(instances, (10, 21), "cam", 320, 180, "m")  # other stamp
    assert not same_message(bytes(raw2), msg)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (720, 1280)])
def test_label_images_give_rclpy_s_message(shape):
    labels = np.random.default_rng(shape[1]).integers(0, 3, shape).astype(np.uint8)
    frame_id = "kämera_ü" if shape == (3, 5) else "camera_optical"  # UTF-8 names too
    raw = mono8_cdr(labels, (42, 7), frame_id)
    msg = convert.mono8_image(labels, _header(42, 7, frame_id))
    assert same_message(raw, msg)
    back = deserialize_message(raw, type(msg))
    np.testing.assert_array_equal(convert.labels_from_msg(back), labels)
    flipped = labels.copy()
    flipped[0, 0] ^= 1
    assert not same_message(mono8_cdr(flipped, (42, 7), frame_id), msg)
