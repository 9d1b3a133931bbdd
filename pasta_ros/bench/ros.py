"""`pasta bench ros`: pasta_node's own overhead, end-to-end latency and output rate, per DDS
transport setting, over real DDS between two processes on this machine.

For each transport asked for (``shm``, the default: the ``config/fastdds_shm.xml`` profile,
shared memory + loopback UDP, as ``sorter.launch.py`` runs the node; ``default``: Fast DDS's
built-in transports, which lose most large best-effort images between processes here), a
worker process (Fast DDS reads its XML profile once per process) starts pasta_node with the
same setting and:

1. sequential: sends ``repeats`` 1280x720 rgb8 frames one at a time (each after the previous
   output), so nothing is dropped. The node reports its overhead (receive -> numpy, result ->
   messages -> publish; inference and the optional overlay excluded) and latency; this process
   measures end to end (publish -> InstanceArray received, same clock);
2. flood: a 30 Hz camera for ``flood_s`` seconds: frames in / processed / dropped, and the
   output rate two ways: ``output_rate_hz`` over the span from the first to the last output
   (outputs that come in a burst make it high) and ``outputs_while_camera_runs_hz``, the
   outputs received while the camera published, per second of publishing (the rate a
   grasp planner sees; the figure for the 10 Hz target).

With the shm transport the worker runs twice: the node's default outputs (label image and
InstanceArray written as serialized bytes, ``serialized_outputs``) and the reference path
(rclpy message objects), so ``overhead_ratio`` (reference / default node overhead p50) comes
from one run on one machine.

Every process uses ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a leased ROS_DOMAIN_ID.
Also measured in-process: rclpy deserialising a 1280x720 rgb8 Image (done before the
node's callback, so not part of its overhead).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

from pasta_ros.bench.machine import machine
from pasta_ros.core.errors import PastaError

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "config" / "fastdds_shm.xml"
WIDTH, HEIGHT = 1280, 720
CAMERA = "/bench/camera/image"
# a sequential frame with no output after this long was lost in transport (a frame takes
# well under a second; 20 s made a lossy transport's run last 8 minutes)
LOST_AFTER_S = 5.0


def transport_env(name: str) -> dict[str, str]:
    """Extra environment of a transport setting (for the node and the client alike)."""
    if name == "shm":
        return {"FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE),
                "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)}
    return {}


def ensure_model(path: str | None, work: Path) -> Path:
    """``path``, else demo_out/model, else a small model calibrated now (K=8, 910x512)."""
    for candidate in (path, "demo_out/model"):
        if candidate and (Path(candidate) / "manifest.json").is_file():
            return Path(candidate)
    from pasta_ros.calibration_job import calibrate_paths
    from pasta_ros.core.config import PastaConfig
    from pasta_ros.data.synth import generate

    data, model = work / "data", work / "model"
    generate("steel", data, seed=0, n_baseline=6, n_reference=3, n_empty=2, n_test=0)
    calibrate_paths(PastaConfig(clusters=8), data / "baseline", data / "reference",
                    data / "empty", model, quiet=True)
    return model


def deserialize_ms(repeats: int) -> float:
    """Median ms for rclpy to deserialise one 1280x720 rgb8 Image."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from pasta_ros.testing.ros_session import image_msg

    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    raw = serialize_message(image_msg(rgb, "rgb8", 1))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        deserialize_message(raw, Image)
        samples.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(samples)), 2)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}


def worker(transport: str, model: str, repeats: int, flood_s: float, log_dir: str,
           serialized: bool = True) -> dict:
    """One transport setting: start the node (``serialized_outputs`` = ``serialized``),
    measure, end it (runs in its own process)."""
    from pasta_ros.data.synth import render_scene
    from pasta_ros.testing.ros_session import (
        Outputs,
        RosSession,
        handshake,
        image_msg,
        running_node,
        stamp_of,
    )

    session = RosSession(f"pasta_bench_{transport}", transport_env(transport))
    frames = [render_scene("steel", np.random.default_rng(i), WIDTH, HEIGHT, 8, 2)[0]
              for i in range(4)]
    args = ["-r", f"image:={CAMERA}", "-p", f"model_dir:={model}",
            "-p", f"models_root:={log_dir}/models", "-p", "publish_overlay:=false",
            "-p", "diagnostics_period:=0.5",
            "-p", f"serialized_outputs:={'true' if serialized else 'false'}"]
    from sensor_msgs.msg import Image

    try:
        log = Path(log_dir) / f"node_{transport}_{'bytes' if serialized else 'objects'}.log"
        with running_node(session, args, log):
            out = Outputs(session.client)
            out.wait_matched(60.0)
            cam = session.client.node.create_publisher(Image, CAMERA, 10)
            handshake(cam, out, lambda ns: image_msg(frames[0], "rgb8", ns), 120.0)
            e2e, lost = [], 0
            for i in range(repeats):
                msg = image_msg(frames[i % len(frames)], "rgb8", (10 + i) * 10**9)
                t0 = time.perf_counter()
                cam.publish(msg)
                try:
                    out.wait_frame(stamp_of((10 + i) * 10**9), LOST_AFTER_S)
                except PastaError:  # lost in transport (best effort): count, go on
                    lost += 1
                    continue
                t1 = next(t for t, s, _ in reversed(out.arrivals) if s == (10 + i, 0))
                e2e.append((t1 - t0) * 1e3)
            seq = out.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 60.0)
            # built before the camera starts: building 300 messages takes seconds, and the
            # camera's clock must not run meanwhile (it would start with a burst)
            msgs = [image_msg(frames[i % len(frames)], "rgb8", (10_000 + i) * 10**9)
                    for i in range(int(flood_s * 30))]
            n0, t_start = len(out.arrivals), time.perf_counter()
            for i, msg in enumerate(msgs):  # a 30 Hz camera
                time.sleep(max(0.0, t_start + i / 30 - time.perf_counter()))
                cam.publish(msg)
            t_pub = time.perf_counter() - t_start
            try:
                out.wait_frame(stamp_of((10_000 + len(msgs) - 1) * 10**9), 60.0)
            except PastaError:
                pass  # the last frame was lost in transport; the counters still tell
            flood = out.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 60.0)
            outs = [t for t, _, _ in out.arrivals[n0:]]
            during = sum(t_start <= t <= t_start + t_pub for t in outs)
    finally:
        session.close()
    delta = {k: flood[k] - seq[k] for k in ("frames_in", "frames_processed", "frames_dropped",
                                             "frames_bad")}
    return {
        "transport": transport,
        "outputs": "serialized" if serialized else "objects",
        "sequential": {"frames": repeats, "lost_in_transport": lost,
                       "node_overhead_ms": {"p50": seq["overhead_p50_ms"],
                                            "p95": seq["overhead_p95_ms"]},
                       "node_latency_ms": {"p50": seq["latency_p50_ms"],
                                           "p95": seq["latency_p95_ms"]},
                       "end_to_end_ms": percentiles(e2e)},
        "flood_30hz": {"seconds": round(t_pub, 1), "frames_sent": len(msgs),
                       "lost_in_transport": len(msgs) - delta["frames_in"], **delta,
                       "in_equals_processed_plus_dropped_plus_bad":
                           delta["frames_in"] == delta["frames_processed"]
                           + delta["frames_dropped"] + delta["frames_bad"],
                       "output_rate_hz": round((len(outs) - 1) / (outs[-1] - outs[0]), 2)
                       if len(outs) > 1 else 0.0,
                       "outputs_while_camera_runs_hz": round(during / t_pub, 2),
                       "first_output_after_s": round(outs[0] - t_start, 2) if outs else None},
    }


def bench_ros(args: Namespace) -> dict:
    """Run the worker once per transport; returns the measurements (see module docstring)."""

    repeats = int(getattr(args, "repeats", 30) or 30)
    flood_s = float(getattr(args, "flood_seconds", 10.0) or 10.0)
    transports = getattr(args, "transports", None) or ["shm"]
    if isinstance(transports, str):
        transports = [t for t in transports.split(",") if t]
    unknown = sorted(set(transports) - {"default", "shm"})
    if unknown:
        raise PastaError(f"unknown transport(s) {', '.join(unknown)}; use default and/or shm")
    runs = [(t, True) for t in transports] + [("shm", False)] * ("shm" in transports)
    with tempfile.TemporaryDirectory(prefix="pasta_bench_ros_") as tmp:
        model = ensure_model(getattr(args, "model", None), Path(tmp))
        results = [_run_worker(t, serialized, model, repeats, flood_s, tmp)
                   for t, serialized in runs]
    out = {"benchmark": "ros", "image": f"{WIDTH}x{HEIGHT} rgb8", "model": str(model),
           "rclpy_deserialize_1280x720_ms": deserialize_ms(50), "results": results,
           "machine": machine() | {"rmw": "rmw_fastrtps_cpp (Jazzy wheels)"}}
    shm = {r["outputs"]: r["sequential"]["node_overhead_ms"]["p50"] for r in results
           if r["transport"] == "shm"}
    if shm.get("serialized") and shm.get("objects"):
        out["overhead_ratio"] = round(shm["objects"] / shm["serialized"], 2)
    return out


def _run_worker(transport: str, serialized: bool, model: Path, repeats: int, flood_s: float,
                tmp: str) -> dict:
    """:func:`worker` in a child process (Fast DDS reads its profile once per process)."""
    cmd = [sys.executable, "-m", "pasta_ros.bench.ros", "--worker", transport,
           str(model.resolve()), str(repeats), str(flood_s), tmp, str(int(serialized))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env=os.environ | transport_env(transport))
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker ({transport}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--worker":
        _, _, transport, model, repeats, flood_s, log_dir, serialized = sys.argv
        print(json.dumps(worker(transport, model, int(repeats), float(flood_s), log_dir,
                                bool(int(serialized)))))
    else:
        print(json.dumps(bench_ros(Namespace()), indent=2))
