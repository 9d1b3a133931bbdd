"""/pasta/recalibrate over real DDS: success while frames keep flowing, persistence and restart,
every failure mode with the running model untouched, a second call refused while one runs."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import require_ros

require_ros()

from sensor_msgs.msg import Image  # noqa: E402

from pasta_msgs.srv import Recalibrate  # noqa: E402
from pasta_ros.data.bags import BagWriter, write_bag_images  # noqa: E402
from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.sources import folder_source  # noqa: E402
from pasta_ros.testing.ros_session import (  # noqa: E402
    Outputs,
    handshake,
    image_msg,
    running_node,
)

NS = "/r"
CAMERA = "/test/recal/image"
BAG_TOPIC = "/cam/image"
_stamps = itertools.count(7_000_000)


@pytest.fixture(scope="module")
def bags(tiny_steel, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recal_bags")

    def frames(folder):
        return [rgb for _, rgb in folder_source(folder)()]

    out = {"baseline": root / "baseline", "reference": root / "reference",
           "empty": root / "empty", "few": root / "few", "no_frames": root / "no_frames",
           "corrupt": root / "corrupt.mcap"}
    write_bag_images(out["baseline"], BAG_TOPIC, frames(tiny_steel.baseline), storage="mcap")
    write_bag_images(out["reference"], BAG_TOPIC, frames(tiny_steel.reference),
                     storage="sqlite3")
    write_bag_images(out["empty"], BAG_TOPIC, frames(tiny_steel.empty), storage="mcap")
    write_bag_images(out["few"], BAG_TOPIC, frames(tiny_steel.baseline)[:2], storage="mcap")
    with BagWriter(out["no_frames"]) as w:
        w.add_topic(BAG_TOPIC, "sensor_msgs/msg/Image")
    out["corrupt"].write_bytes(np.random.default_rng(0).bytes(4096))
    return out


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recal_models") / "models"


def lineage_dir(models_root: Path) -> Path:
    """Where the node under test keeps its models: its default lineage is its name."""
    return models_root / "r.pasta_node"


def node_args(tiny_model, models_root, ns=NS, *extra):
    return ["-r", "__node:=pasta_node", "-r", f"__ns:={ns}", "-r", f"image:={CAMERA}",
            "-p", f"model_dir:={tiny_model}", "-p", f"models_root:={models_root}",
            "-p", "clusters:=8", "-p", "diagnostics_period:=0.2", *extra]


@pytest.fixture(scope="module")
def node(ros, tiny_model, models_root, tmp_path_factory):
    log = tmp_path_factory.mktemp("recal_node") / "node.log"
    with running_node(ros, node_args(tiny_model, models_root), log, namespace=NS) as proc:
        yield proc


@pytest.fixture(scope="module")
def io(ros, node):
    out = Outputs(ros.client, NS)
    out.wait_matched(30.0)
    camera = ros.client.node.create_publisher(Image, CAMERA, 10)
    rgb, _, _ = render_scene("steel", np.random.default_rng(3), 224, 128, 4, 2)
    handshake(camera, out, lambda ns: image_msg(rgb, "rgb8", ns))
    return out, camera, rgb


def current_model(io) -> str:
    """Send one frame and return the model id its output carries."""
    out, camera, rgb = io
    stamp = next(_stamps)
    camera.publish(image_msg(rgb, "rgb8", stamp * 1000))
    _, inst = out.wait_frame((stamp // 1_000_000, (stamp * 1000) % 1_000_000_000), 60.0)
    return inst.model_id


def request(bags, **kw) -> Recalibrate.Request:
    fields = {"baseline_bag": str(bags["baseline"]), "reference_bag": str(bags["reference"]),
              "empty_bag": str(bags["empty"]), "image_topic": BAG_TOPIC} | kw
    return Recalibrate.Request(**fields)


FAILURES = {
    "missing path": (lambda b: {"baseline_bag": "/nonexistent/bag"},
                     "baseline bag: bag not found: /nonexistent/bag"),
    "wrong topic": (lambda b: {"image_topic": "/camera/wrong"},
                    f"'/camera/wrong' is not in bag {{baseline}}; image topics in the bag: "
                    f"{BAG_TOPIC}"),
    "empty bag": (lambda b: {"reference_bag": str(b["no_frames"])}, "has zero frames"),
    "too few frames": (lambda b: {"baseline_bag": str(b["few"])},
                       "has 2 frame(s) on /cam/image; at least 4 are needed"),
    "corrupt bag": (lambda b: {"reference_bag": str(b["corrupt"])},
                    "reference bag: {corrupt} is not a readable ROS 2 bag"),
    "bad override": (lambda b: {"clusters": 1}, "clusters: 1 is outside [2, 1024]"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_name_the_problem_and_leave_the_running_model(ros, bags, io, models_root,
                                                               case):
    before = current_model(io)
    change, expected = FAILURES[case]
    res = ros.client.call(Recalibrate, f"{NS}/pasta/recalibrate", request(bags, **change(bags)),
                          120.0)
    assert not res.success
    assert expected.format(baseline=bags["baseline"], corrupt=bags["corrupt"]) in res.message
    assert res.model_id == before and not res.clusters and not res.model_dir
    assert current_model(io) == before
    assert not models_root.exists() or not any(lineage_dir(models_root).iterdir())


def test_recalibration_while_frames_flow_then_a_second_call_is_refused(ros, bags, io,
                                                                       models_root):
    out, camera, rgb = io
    before = current_model(io)
    stop = threading.Event()

    def stream():  # a 5 Hz camera during the whole recalibration
        while not stop.wait(0.2):
            stamp = next(_stamps) * 1000
            camera.publish(image_msg(rgb, "rgb8", stamp))

    first: list = []
    caller = threading.Thread(target=lambda: first.append(ros.client.call(
        Recalibrate, f"{NS}/pasta/recalibrate", request(bags), 150.0)))
    streamer = threading.Thread(target=stream)
    streamer.start()
    n_before = len(out.arrivals)
    caller.start()
    try:
        out.wait_diagnostics(lambda v: v["recalibrating"] is True, 60.0)
        second = ros.client.call(Recalibrate, f"{NS}/pasta/recalibrate", request(bags), 60.0)
        assert not second.success and "already running" in second.message
        assert second.model_id == before
        caller.join(150.0)
    finally:
        stop.set()
        streamer.join(10.0)
        caller.join(150.0)
    (res,) = first
    assert res.success, res.message
    assert res.model_id != before
    during = [a for a in out.arrivals[n_before:] if a[2] == before]
    assert len(during) >= 2, "outputs kept coming with the old model while it recalibrated"
    assert current_model(io) == res.model_id
    # the node's backend (the default, ONNX Runtime's fused graph) is kept across the swap
    v = out.wait_diagnostics(lambda v: v["model_id"] == res.model_id, 10.0)
    assert v["backend"] == "onnxruntime fp32 (fused graph)", v["backend"]
    model_dir = Path(res.model_dir)
    assert model_dir.parent == lineage_dir(models_root) and model_dir.name == res.model_id
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["model_id"] == res.model_id
    assert (lineage_dir(models_root) / "latest").read_text().strip() == res.model_id
    assert len(res.clusters) == manifest["clusters"]
    assert [c.id for c in res.clusters if c.anomaly] == manifest["anomaly_clusters"]
    assert [c.id for c in res.clusters if c.background] == manifest["background_clusters"]
    assert manifest["stats"]["baseline_images"] == 8 and manifest["stats"]["empty_images"] == 2
    assert manifest["stats"]["parent_model_id"] == before
    assert manifest["stats"]["lineage"] == "r.pasta_node"  # the node's default lineage


@pytest.mark.parametrize("follow_latest", [True, False])
def test_a_restart_of_the_line_follows_latest_only_when_asked(ros, tiny_model, models_root,
                                                             tmp_path, follow_latest):
    """The same line restarted (another namespace, the same lineage): with follow_latest it
    comes back with its newest model; without it, the explicit model_dir wins."""
    newest = (lineage_dir(models_root) / "latest").read_text().strip()
    ns = "/restarted"
    args = node_args(tiny_model, models_root, ns, "-p", "lineage:=r.pasta_node",
                     "-p", f"follow_latest:={str(follow_latest).lower()}")
    with running_node(ros, args, tmp_path / "node.log", namespace=ns):
        out = Outputs(ros.client, ns)
        out.wait_matched(30.0)
        v = out.wait_diagnostics(lambda v: True, 30.0)
        assert v["lineage"] == "r.pasta_node"
        assert (v["model_id"] == newest) is follow_latest


def test_another_line_sharing_the_store_never_loads_this_lines_model(ros, tiny_model,
                                                                     models_root, tmp_path):
    ns = "/line_b"
    args = node_args(tiny_model, models_root, ns, "-p", "follow_latest:=true")
    with running_node(ros, args, tmp_path / "node.log", namespace=ns):
        out = Outputs(ros.client, ns)
        out.wait_matched(30.0)
        v = out.wait_diagnostics(lambda v: True, 30.0)
    assert v["lineage"] == "line_b.pasta_node" and v["model_dir"] == str(tiny_model)


def _goal(bags, **kw):
    from pasta_msgs.action import Recalibrate as RecalibrateAction

    fields = {"baseline_bag": str(bags["baseline"]), "reference_bag": str(bags["reference"]),
              "empty_bag": str(bags["empty"]), "image_topic": BAG_TOPIC} | kw
    return RecalibrateAction.Goal(**fields)


def test_the_action_reports_progress_and_commits_on_success(ros, bags, io, models_root):
    import time

    from action_msgs.msg import GoalStatus

    from pasta_msgs.action import Recalibrate as RecalibrateAction
    from pasta_ros.ros.clients import send_goal

    before = current_model(io)
    feedback: list = []
    t0 = time.monotonic()
    status, res = send_goal(ros.client, RecalibrateAction, f"{NS}/pasta/recalibrate",
                            _goal(bags, clusters=6), 150.0,
                            lambda fb: feedback.append((time.monotonic(), fb)))
    elapsed = time.monotonic() - t0
    assert status == GoalStatus.STATUS_SUCCEEDED and res.success, res.message
    assert res.model_id != before and current_model(io) == res.model_id
    assert (lineage_dir(models_root) / "latest").read_text().strip() == res.model_id
    phases = [fb.phase for _, fb in feedback]
    assert phases[0] == "reading" and "features" in phases and phases[-1] == "swap"
    assert {"clustering", "colour_model", "saving"} <= set(phases)
    totals = {fb.images_total for _, fb in feedback if fb.phase == "features"}
    assert totals == {14}  # 8 baseline + 4 reference + 2 empty frames
    done = [fb.images_done for _, fb in feedback if fb.phase == "features"]
    assert done == sorted(done) and done[-1] == 14
    gaps = np.diff([t0] + [t for t, _ in feedback])
    assert gaps.max() < 1.5, f"feedback gaps {gaps.round(2)} (>= 1 Hz wanted)"
    assert len(feedback) >= int(elapsed)


def test_a_cancelled_goal_answers_at_once_and_commits_nothing(ros, bags, io, models_root):
    import time

    from action_msgs.msg import GoalStatus

    from pasta_msgs.action import Recalibrate as RecalibrateAction
    from pasta_ros.core.errors import PastaError
    from pasta_ros.ros.clients import send_goal

    before = current_model(io)
    latest = (lineage_dir(models_root) / "latest").read_text()
    folders = sorted(p.name for p in lineage_dir(models_root).iterdir())
    started = threading.Event()
    handles: list = []
    box: list = []

    def first():
        box.append(send_goal(ros.client, RecalibrateAction, f"{NS}/pasta/recalibrate",
                             _goal(bags, clusters=7), 150.0, lambda fb: started.set(),
                             handles.append))

    caller = threading.Thread(target=first)
    caller.start()
    assert started.wait(60.0)
    with pytest.raises(PastaError, match="rejected the goal"):  # one at a time
        send_goal(ros.client, RecalibrateAction, f"{NS}/pasta/recalibrate", _goal(bags), 30.0)
    t_cancel = time.monotonic()
    handles[0].cancel_goal_async()
    caller.join(30.0)
    answered = time.monotonic() - t_cancel
    ((status, res),) = box
    assert status == GoalStatus.STATUS_CANCELED and not res.success
    # the node polls for the cancel every 0.1 s and kills the worker at once; the bound is
    # loose because CI's 2 cores also run the node's inference and the worker
    assert "nothing committed" in res.message and answered < 5.0
    out, _, _ = io
    out.wait_diagnostics(lambda v: v["recalibrating"] is False, 120.0)  # the worker ended
    assert current_model(io) == before
    assert (lineage_dir(models_root) / "latest").read_text() == latest
    assert sorted(p.name for p in lineage_dir(models_root).iterdir()) == folders
    assert not list((lineage_dir(models_root) / ".cache").glob("*"))  # the worker's cache


def test_a_cancel_after_success_is_answered_and_changes_nothing(ros, bags, io, models_root):
    from action_msgs.srv import CancelGoal

    from pasta_msgs.action import Recalibrate as RecalibrateAction

    # the client node's one ActionClient for the action (shared with send_goal)
    ac = ros.client.action_client(RecalibrateAction, f"{NS}/pasta/recalibrate")
    assert ac.wait_for_server(timeout_sec=15.0)

    def wait(future, timeout):
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout)
        return future.result()

    handle = wait(ac.send_goal_async(_goal(bags, clusters=5)), 30.0)
    assert handle.accepted
    result = wait(handle.get_result_async(), 150.0).result
    assert result.success, result.message
    latest = (lineage_dir(models_root) / "latest").read_text()
    answer = wait(handle.cancel_goal_async(), 10.0)
    assert answer.return_code == CancelGoal.Response.ERROR_GOAL_TERMINATED
    assert (lineage_dir(models_root) / "latest").read_text() == latest
    assert current_model(io) == result.model_id


def test_select_model_rolls_back_and_forth_and_refuses_what_cannot_run(ros, io, models_root,
                                                                       tmp_path):
    import shutil

    from pasta_msgs.srv import SelectModel

    store = lineage_dir(models_root)

    def select(**fields):
        return ros.client.call(SelectModel, f"{NS}/pasta/select_model",
                               SelectModel.Request(**fields), 60.0)

    running = current_model(io)
    parent = json.loads((store / running / "manifest.json").read_text())["stats"][
        "parent_model_id"]
    res = select(rollback=True)
    assert res.success, res.message
    assert res.model_id == parent == current_model(io)
    assert (store / "latest").read_text().strip() == parent
    res = select(model_id=running)
    assert res.success and current_model(io) == running
    # another input size (manifest edited; the arrays checksum still holds): refused, and the
    # outside folder is not copied into the lineage
    other = tmp_path / "other"
    shutil.copytree(store / running, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest |= {"input_size": [64, 64], "model_id": "other-size"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    folders = sorted(p.name for p in store.iterdir())
    for fields, expected in (({"model_dir": str(other)}, "has input size (64, 64)"),
                             ({"model_id": "nope"}, "no model 'nope'"),
                             ({}, "give model_id, model_dir or rollback")):
        res = select(**fields)
        assert not res.success and expected in res.message, res.message
        assert res.model_id == running == current_model(io)
    assert sorted(p.name for p in store.iterdir()) == folders
    assert (store / "latest").read_text().strip() == running
