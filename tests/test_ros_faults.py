"""Faults over real DDS: the node killed with SIGKILL in the middle of a recalibration comes
back with its old model, nothing half-written is picked, the leftovers (store temporaries,
feature-cache files, the orphaned worker, Fast DDS shared-memory files) are gone."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import require_ros

require_ros()

from pasta_msgs.action import Recalibrate as RecalibrateAction  # noqa: E402
from pasta_ros.core.errors import PastaError  # noqa: E402
from pasta_ros.data.bags import write_bag_images  # noqa: E402
from pasta_ros.ros.clients import send_goal  # noqa: E402
from pasta_ros.ros.process import NodeProcess, clean_stale_shm  # noqa: E402
from pasta_ros.sources import folder_source  # noqa: E402
from pasta_ros.testing.ros_session import Outputs  # noqa: E402

TOPIC = "/cam/image"
LINEAGE = "line_f"


@pytest.fixture(scope="module")
def fault_bags(tiny_steel, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fault_bags")
    out = {}
    for name, folder in (("baseline", tiny_steel.baseline), ("reference", tiny_steel.reference)):
        out[name] = root / name
        write_bag_images(out[name], TOPIC, [rgb for _, rgb in folder_source(folder)()],
                         storage="mcap")
    return out


def _workers_of(domain_id: int) -> list[int]:
    """Pids of recalibration worker processes started in this test's ROS domain."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"multiprocessing" in cmd and f"ROS_DOMAIN_ID={domain_id}".encode() in env:
            pids.append(int(proc.name))
    return pids


def _start(ros, tiny_model, root: Path, ns: str, log: Path) -> NodeProcess:
    args = ["-r", "__node:=pasta_node", "-r", f"__ns:={ns}", "-p", f"model_dir:={tiny_model}",
            "-p", f"models_root:={root}", "-p", f"lineage:={LINEAGE}",
            "-p", "follow_latest:=true", "-p", "diagnostics_period:=0.2"]
    node = NodeProcess(args, ros.env, log).start()
    node.wait_ready(ros.client, f"{ns}/pasta/recalibrate", timeout=120.0)
    return node


def _model_id(ros, ns: str) -> str:
    return Outputs(ros.client, ns).wait_diagnostics(lambda v: True, 60.0)["model_id"]


@pytest.mark.parametrize("phase", ["features", "saving"])
def test_kill_9_during_recalibration_then_restart_comes_back_with_the_old_model(
        ros, tiny_model, fault_bags, tmp_path, phase):
    root, ns = tmp_path / "models", f"/fault_{phase}"
    node = _start(ros, tiny_model, root, ns, tmp_path / "killed.log")
    killed = threading.Event()
    try:
        before = _model_id(ros, ns)

        def on_feedback(fb) -> None:
            if fb.phase == phase and not killed.is_set():
                killed.set()
                os.kill(node.pid, signal.SIGKILL)

        goal = RecalibrateAction.Goal(baseline_bag=str(fault_bags["baseline"]),
                                      reference_bag=str(fault_bags["reference"]),
                                      image_topic=TOPIC)
        with pytest.raises(PastaError):  # the node died: no result ever comes
            send_goal(ros.client, RecalibrateAction, f"{ns}/pasta/recalibrate", goal, 40.0,
                      on_feedback)
        assert killed.is_set() and node.wait_exit(10.0) == -signal.SIGKILL
        deadline = time.monotonic() + 10.0  # the orphaned worker ends by itself
        while _workers_of(ros.domain_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _workers_of(ros.domain_id)
    finally:
        node.stop()
        for pid in _workers_of(ros.domain_id):
            os.kill(pid, signal.SIGKILL)
    clean_stale_shm()  # what the killed node left in /dev/shm would disturb the restart
    lineage = root / LINEAGE
    assert not (lineage / "latest").exists()  # nothing was committed
    restarted = _start(ros, tiny_model, root, ns, tmp_path / "restarted.log")
    try:
        assert _model_id(ros, ns) == before
        leftovers = [p for p in lineage.iterdir() if p.name.startswith(".tmp-")]
        leftovers += list((lineage / ".cache").glob("*")) if (lineage / ".cache").is_dir() \
            else []
        assert leftovers == []
    finally:
        restarted.stop()
    clean_stale_shm()  # what the killed node left in /dev/shm: later tests are not poisoned


def test_stale_shared_memory_is_removed_and_live_segments_are_kept(ros):
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    maps = Path("/proc/self/maps").read_text().splitlines()
    mine = {line[line.index("/dev/shm"):] for line in maps
            if "/dev/shm/fastrtps_" in line and not line.endswith("(deleted)")}
    assert mine, "this process's DDS participant maps shared-memory segments"
    stale = shm / f"fastrtps_pasta_test_stale_{os.getpid()}"
    stale.write_bytes(b"\0" * 64)
    removed = clean_stale_shm()
    assert stale in removed and not stale.exists()
    # nothing this live process maps was removed (Fast DDS itself may unlink the segment of a
    # participant it found dead, so the check is on what the cleaner removed)
    assert not {str(p) for p in removed} & mine


def test_a_write_failure_fails_the_recalibration_and_commits_nothing(tiny_model, fault_bags,
                                                                     tmp_path):
    """An injected write failure (the lineage's folder is taken by a file, as a full or
    read-only disk refuses writes): the worker's OSError becomes the answer; nothing commits."""
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.core.model_store import ModelStore
    from pasta_ros.pipeline import PastaPipeline
    from pasta_ros.ros.recalibration import Recalibrator, Request

    root = tmp_path / "models"
    root.mkdir()
    (root / LINEAGE).write_text("not a folder")
    store = ModelStore(root, LINEAGE)
    cfg = PastaConfig(clusters=4, backend="torch")
    running = PastaPipeline.load(tiny_model, cfg)
    (tmp_path / "cache").mkdir()
    swapped: list = []
    outcome = Recalibrator(threading.Event()).run(
        Request(str(fault_bags["baseline"]), str(fault_bags["reference"]), "", TOPIC), cfg,
        running, store, 4, swapped.append, cache_dir=tmp_path / "cache")
    assert not outcome.success and outcome.message.startswith("recalibration failed: ")
    assert "Errno" in outcome.message and not swapped
    assert (root / LINEAGE).read_text() == "not a folder"
    assert not list((tmp_path / "cache").glob("*"))  # the feature caches were removed
