"""`pasta bench soak`: pasta_node under a steady camera for a long run: memory and counters.

A node process is started (loopback-only discovery, a leased ROS_DOMAIN_ID, the transport of
``--transport``) and this process publishes ``--frames`` rgb8 frames of ``--size`` at
``--rate`` Hz, cycling over a few rendered scenes. Every ``--sample-s`` seconds (default 10)
the node's resident memory (``/proc/<pid>/status`` VmRSS) and its diagnostics counters are
recorded. At the end: frames in = processed + dropped + bad (the node's own accounting),
frames lost before reaching the node (sent - in; the middleware's message-lost count beside
it), and RSS growth from the end of the warm-up (the first ``--warmup`` share of the run) to
the end. The whole run is bounded: frames / rate + 300 s, then the node is ended anyway.
"""

from __future__ import annotations

import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

from pasta_ros.bench.machine import machine
from pasta_ros.bench.ros import ensure_model, transport_env

CAMERA = "/soak/camera/image"


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _frames(size: tuple[int, int], n: int = 4) -> list[np.ndarray]:
    from pasta_ros.data.synth import render_scene

    return [render_scene("steel", np.random.default_rng(i), size[0], size[1], 8, 2)[0]
            for i in range(n)]


def growth(samples: list[dict], warmup: float) -> dict:
    """RSS at the end of the warm-up, at the end, and the growth between, in %."""
    t_end = samples[-1]["t_s"]
    after = [s for s in samples if s["t_s"] >= warmup * t_end] or samples[-1:]
    start, end = after[0]["rss_mb"], samples[-1]["rss_mb"]
    return {"rss_after_warmup_mb": start, "rss_end_mb": end,
            "rss_peak_mb": max(s["rss_mb"] for s in samples),
            "rss_growth_pct": round(100.0 * (end - start) / start, 2)}


def bench_soak(args: Namespace) -> dict:
    """Run the soak (see the module docstring); returns the samples and the verdicts."""
    from sensor_msgs.msg import Image

    from pasta_ros.testing.ros_session import (
        Outputs,
        RosSession,
        handshake,
        image_msg,
        running_node,
    )

    n = int(getattr(args, "frames", None) or 10_000)
    rate = float(getattr(args, "rate", None) or 10.0)
    size = tuple(getattr(args, "size", None) or (1280, 720))
    every = float(getattr(args, "sample_s", None) or 10.0)
    warmup = float(getattr(args, "warmup", None) or 0.1)
    transport = getattr(args, "transport", None) or "shm"
    deadline = time.monotonic() + n / rate + 300.0
    frames = _frames(size)
    with tempfile.TemporaryDirectory(prefix="pasta_bench_soak_") as tmp:
        model = ensure_model(getattr(args, "model", None), Path(tmp))
        session = RosSession("pasta_bench_soak", transport_env(transport))
        try:
            node_args = ["-r", f"image:={CAMERA}", "-p", f"model_dir:={model.resolve()}",
                         "-p", f"models_root:={tmp}/models", "-p", "diagnostics_period:=1.0",
                         "-p", "publish_overlay:=false"]
            with running_node(session, node_args, Path(tmp) / "node.log") as node:
                out = Outputs(session.client)
                out.wait_matched(60.0)
                cam = session.client.node.create_publisher(Image, CAMERA, 10)
                handshake(cam, out, lambda ns: image_msg(frames[0], "rgb8", ns), 120.0)
                start = out.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 60.0)
                samples = _publish(cam, out, node.pid, frames, n, rate, every, deadline,
                                   image_msg)
                end = out.wait_diagnostics(lambda v: v["frames_in_flight"] == 0,
                                           max(10.0, deadline - time.monotonic()))
                samples.append({"t_s": samples[-1]["t_s"] if samples else 0.0,
                                "rss_mb": rss_mb(node.pid), "sent": n,
                                **_counters(end, start)})
        finally:
            session.close()
    counts = _counters(end, start)
    return {"benchmark": "soak", "frames": n, "rate_hz": rate, "size": f"{size[0]}x{size[1]}",
            "transport": transport, "model": str(model), "warmup_share": warmup,
            "counters": counts, "lost_before_node": n - counts["frames_in"],
            "in_equals_processed_plus_dropped_plus_bad":
                counts["frames_in"] == counts["frames_processed"] + counts["frames_dropped"]
                + counts["frames_bad"],
            **growth(samples, warmup), "samples": samples, "machine": machine()}


def _counters(values: dict, start: dict) -> dict:
    keys = ("frames_in", "frames_processed", "frames_dropped", "frames_bad", "frames_lost_dds")
    return {k: int(values.get(k, 0)) - int(start.get(k, 0)) for k in keys}


def _publish(cam, out, pid: int, frames, n: int, rate: float, every: float, deadline: float,
             image_msg) -> list[dict]:
    """Publish ``n`` frames at ``rate``; sample RSS and counters every ``every`` s."""
    from tqdm import tqdm

    from pasta_ros.testing.ros_session import typed

    samples: list[dict] = []
    start = out.wait_diagnostics(lambda v: True, 30.0)
    t0 = next_sample = time.perf_counter()
    for i in tqdm(range(n), desc="soak", unit="frame", mininterval=5.0):
        time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        cam.publish(image_msg(frames[i % len(frames)], "rgb8", (100_000 + i) * 10**9))
        now = time.perf_counter()
        if now >= next_sample:
            last = out.diagnostics[-1] if out.diagnostics else {}
            samples.append({"t_s": round(now - t0, 1), "rss_mb": rss_mb(pid), "sent": i + 1,
                            **_counters(typed(last), start)})
            next_sample = now + every
        if time.monotonic() > deadline:
            break
    return samples
