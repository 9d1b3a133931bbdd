"""The ROS layer's pure parts, no DDS: parameter validation, the latest-frame slot, message
conversion, the model store, the launch file's arguments."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import require_ros

require_ros()

from pasta_ros.core.config import (  # noqa: E402
    ConfigError,
    PastaConfig,
    load_yaml_config,
    plugin_options,  # noqa: E402
)
from pasta_ros.core.fusion import Instance  # noqa: E402
from pasta_ros.ros import convert  # noqa: E402
from pasta_ros.ros.frames import Frame, LatestFrame  # noqa: E402
from pasta_ros.ros.params import (  # noqa: E402
    apply_changes,
    declarations,
    descriptor,
    settings_from_values,
)
from pasta_ros.testing.ros_session import compressed_msg, image_msg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_sorter_yaml_is_valid_for_the_node_and_the_cli():
    import yaml

    block = next(iter(yaml.safe_load((ROOT / "config" / "sorter.yaml").read_text()).values()))
    values = block["ros__parameters"]
    settings = settings_from_values(values | {"model_dir": "/m"})
    assert settings.config == PastaConfig.from_dict(load_yaml_config(ROOT / "config" /
                                                                     "sorter.yaml"))
    # sorter.yaml lists every shared field and node parameter; the plug-ins' own options
    # (sam3_*) come from the registries and are listed by `pasta config`
    plugin = {o.name for o in plugin_options()}
    assert set(values) | {"model_dir"} | plugin == {d.name for d in declarations()}


@pytest.mark.parametrize("values, message", [
    ({"clusters": 1}, "clusters: 1 is outside [2, 1024]"),
    ({"qos_depth": 0}, "qos_depth: 0 is outside [1, 100]"),
    ({"input_type": "h264"}, "input_type: 'h264' is not one of raw, compressed"),
    ({"publish_overlay": 1}, "publish_overlay: expected bool"),
    ({"model_dir": ""}, "model_dir: give a calibrated model directory"),
    ({"nope": 3}, "unknown parameter(s): nope"),
])
def test_invalid_values_name_the_parameter(values, message):
    with pytest.raises(ConfigError) as err:
        settings_from_values({"model_dir": "/m"} | values)
    assert message in str(err.value)


def test_descriptors_carry_ranges_and_choices():
    by_name = {d.name: descriptor(d) for d in declarations()}
    r = by_name["ratio_threshold"].floating_point_range[0]
    assert (r.from_value, r.to_value) == (0.0, 1.0)
    assert by_name["clusters"].integer_range[0].to_value == 1024
    assert "raw, compressed" in by_name["input_type"].additional_constraints
    assert by_name["backbone"].read_only and not by_name["vote_threshold"].read_only
    assert all(d.description for d in by_name.values())
    s = settings_from_values({"model_dir": "/m"})
    assert apply_changes(s, {"vote_threshold": 0.3}).config.vote_threshold == 0.3


def test_latest_frame_keeps_the_newest_and_the_counts_always_add_up():
    slot = LatestFrame()
    rgb = np.zeros((2, 2, 3), np.uint8)
    for i in range(5):
        slot.put(Frame(rgb, i, 0.0, 0.0))
    slot.bad_frame()
    taken = slot.take(0.01)
    assert taken.header == 4 and slot.take(0.01) is None
    snap = slot.snapshot()
    assert (snap["frames_in"], snap["frames_dropped"], snap["frames_bad"],
            snap["frames_in_flight"]) == (6, 4, 1, 1)
    slot.done(10.0, 1.0)
    snap = slot.snapshot()
    assert snap["frames_in"] == snap["frames_processed"] + snap["frames_dropped"] + \
        snap["frames_bad"] and snap["frames_in_flight"] == 0


def test_latest_frame_counts_add_up_under_concurrency():
    slot = LatestFrame()
    rgb = np.zeros((1, 1, 3), np.uint8)
    stop = threading.Event()
    snapshots = []

    def consumer():
        while not stop.is_set():
            if slot.take(0.001) is not None:
                slot.done(1.0, 0.1)
            snapshots.append(slot.snapshot())

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(2000):
        slot.put(Frame(rgb, i, 0.0, 0.0)) if i % 7 else slot.bad_frame()
    stop.set()
    t.join(10.0)
    for s in snapshots + [slot.snapshot()]:
        assert s["frames_in"] == s["frames_processed"] + s["frames_dropped"] + s["frames_bad"] \
            + s["frames_in_flight"]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
@pytest.mark.parametrize("padding", [0, 3])
def test_image_messages_convert_to_rgb(encoding, padding):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = convert.image_to_rgb(image_msg(rgb, encoding, 1, row_padding=padding))
    if encoding.startswith("mono"):
        import cv2
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, 2))
    else:
        np.testing.assert_array_equal(out, rgb)


def test_compressed_and_output_messages():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(convert.compressed_to_rgb(compressed_msg(rgb, 1)), rgb)
    labels = np.array([[0, 1, 1], [0, 2, 2]], np.uint8)
    header = image_msg(rgb, "rgb8", 2_000_000_007).header
    msg = convert.mono8_image(labels, header)
    np.testing.assert_array_equal(convert.labels_from_msg(msg), labels)
    inst = Instance(id=1, label=2, anomaly_share=0.5, bbox=(1, 1, 2, 1), area=2,
                    centroid=(1.5, 1.0), mask=np.ones((1, 2), bool))
    arr = convert.instance_array([inst], header, 3, 2, "m1")
    (m,) = arr.instances
    assert (m.bbox.x_offset, m.bbox.y_offset, m.bbox.width, m.bbox.height) == (1, 1, 2, 1)
    assert m.class_id == m.CLASS_ANOMALY and m.score == 0.5 and m.centroid.x == 1.5
    np.testing.assert_array_equal(convert.mask_from_msg(m), inst.mask)
    assert arr.header.stamp.sec == 2 and arr.header.stamp.nanosec == 7


def test_fast_overlay_matches_the_report_overlay():
    import cv2

    from pasta_ros.core.report import overlay_labels

    rgb = np.random.default_rng(2).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    labels = np.zeros((60, 90), np.uint8)
    cv2.circle(labels, (30, 30), 12, 1, -1)
    cv2.circle(labels, (65, 30), 12, 2, -1)
    diff = np.abs(convert.fast_overlay(rgb, labels).astype(int) - overlay_labels(rgb, labels))
    assert diff.max() <= 1


def test_instance_messages_carry_the_oriented_box_and_a_bounded_contour():
    mask = np.zeros((6, 20), bool)
    mask[1:5, 2:18] = True  # a 16 x 4 block at (x, y) = (102, 51) .. (117, 54)
    inst = Instance(id=1, label=2, anomaly_share=0.5, bbox=(100, 50, 20, 6), area=64,
                    centroid=(109.5, 52.5), mask=mask)
    msg = convert.instance_msg(inst, None, max_contour_vertices=8)
    assert (msg.obb_length, msg.obb_width, msg.obb_angle) == pytest.approx((16.0, 4.0, 0.0))
    assert (msg.obb_center.x, msg.obb_center.y) == pytest.approx((109.5, 52.5))
    corners = sorted((p.x, p.y) for p in msg.contour.points)
    assert corners == [(102, 51), (102, 54), (117, 51), (117, 54)]
    assert convert.instance_msg(inst, None, max_contour_vertices=0).contour.points == []


def test_camera_info_cache_pairs_the_nearest_stamp_within_the_slop():
    from types import SimpleNamespace

    from pasta_ros.ros.camera_info import CameraInfoCache

    def msg(ns: int, w: int = 64, h: int = 48):
        stamp = SimpleNamespace(sec=ns // 10**9, nanosec=ns % 10**9)
        return SimpleNamespace(header=SimpleNamespace(stamp=stamp), width=w, height=h)

    cache = CameraInfoCache(slop_s=0.05, depth=3)
    for ns in (1_000_000_000, 1_100_000_000, 1_200_000_000):
        cache.put(msg(ns))
    found, _ = cache.match(msg(1_090_000_000).header, 64, 48)  # 10 ms from 1.1 s
    assert found is not None and found.header.stamp.nanosec == 100_000_000
    assert cache.match(msg(1_400_000_000).header, 64, 48)[0] is None  # 200 ms away
    found, why = cache.match(msg(1_200_000_000).header, 640, 480)
    assert found is None and "64x48 but the image is 640x480" in why
    cache.put(msg(1_300_000_000))  # depth 3: 1.0 s is evicted
    assert cache.match(msg(1_000_000_000).header, 64, 48)[0] is None
    assert cache.counts == {"received": 4, "matched": 1, "unmatched": 2, "size_mismatch": 1}


def test_a_stopped_camera_warns_then_errors():
    from pasta_ros.ros.diagnostics import Limits, status_level

    base = {"rate_hz": 0.0, "latency_p50_ms": 0.0, "model_id": "m", "frames_bad": 0,
            "frames_in": 5, "frames_processed": 5}
    two = Limits(input_timeout_s=2.0)
    assert status_level(base | {"input_age_s": 0.5}, None, two)[0] == 0
    level, message = status_level(base | {"input_age_s": 3.0}, None, two)
    assert level == 1 and "no camera frame for 3.0 s" in message
    assert "check the camera" in message
    assert status_level(base | {"input_age_s": 10.0}, None, two)[0] == 2
    assert status_level(base | {"input_age_s": 9.9}, None, two)[0] == 1


def test_latency_rate_and_drop_thresholds():
    from pasta_ros.ros.diagnostics import Limits, status_level

    prev = {"rate_hz": 5.0, "latency_p50_ms": 50.0, "model_id": "m", "frames_bad": 0,
            "frames_in": 100, "frames_processed": 50, "frames_dropped": 50,
            "latency_p95_ms": 80.0, "input_age_s": 0.1}
    now = prev | {"frames_in": 110, "frames_processed": 52, "frames_dropped": 58,
                  "rate_hz": 2.0}  # 8 of 10 dropped, 2 Hz out
    assert status_level(now, prev, Limits())[0] == 0  # every threshold off by default
    assert status_level(now, prev, Limits(latency_warn_ms=70.0))[0] == 1
    level, message = status_level(now, prev, Limits(latency_error_ms=79.0))
    assert level == 2 and "latency p95 80 ms > 79 ms" in message
    level, message = status_level(now, prev, Limits(min_rate_hz=5.0))
    assert level == 1 and "output rate 2 Hz < 5 Hz" in message
    level, message = status_level(now, prev, Limits(drop_share_warn=0.5))
    assert level == 1 and "dropped 8 of 10 frames" in message
    assert status_level(now, prev, Limits(drop_share_warn=0.8))[0] == 0  # 0.8 is not > 0.8
    idle = now | {"frames_in": 100, "frames_dropped": 50}  # no frames came: no rate verdict
    assert status_level(idle, prev, Limits(min_rate_hz=5.0))[0] == 0


def test_input_age_counts_from_the_start_then_from_the_last_frame():
    import time as _time

    slot = LatestFrame()
    _time.sleep(0.05)
    assert slot.snapshot()["input_age_s"] >= 0.05
    slot.bad_frame()  # a bad frame still shows the camera is alive
    assert slot.snapshot()["input_age_s"] < 0.05


def test_the_icas_vote_sharing_the_backbone_loads_the_feature_graph():
    plain = settings_from_values({"model_dir": "/m"})
    assert plain.config.fused_graph and plain.pipeline_config().fused_graph
    shared = settings_from_values({"model_dir": "/m", "icas_mode": "combine"})
    assert shared.config.fused_graph, "the user's setting itself is kept"
    assert not shared.pipeline_config().fused_graph, "the vote needs the backbone features"
    own = settings_from_values({"model_dir": "/m", "icas_mode": "combine",
                                "icas_share_backbone": False})
    assert own.pipeline_config().fused_graph


def test_bench_ros_refuses_an_unknown_transport_before_starting_anything():
    from argparse import Namespace

    from pasta_ros.bench.ros import bench_ros
    from pasta_ros.core.errors import PastaError

    with pytest.raises(PastaError, match="unknown transport.*udp"):
        bench_ros(Namespace(transports="shm,udp"))
