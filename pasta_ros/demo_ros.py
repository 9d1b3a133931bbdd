"""`make demo`, ROS part: pasta_node on the demo model, fed from a bag, recalibrated live.

Runs after :mod:`pasta_ros.demo` (which leaves ``OUT/model`` and ``OUT/data``):

1. writes a bag of synthetic conveyor frames (exact ground-truth masks kept) and a second
   pair of calibration bags (baseline, reference, empty) from a new synthetic set;
2. starts pasta_node in a child process with the --ros-args of ``launch/sorter.launch.py``
   (discovery on loopback only, a leased ROS_DOMAIN_ID), plays the bag into it and records
   ``/pasta/segmentation``, ``/pasta/anomaly_masks``, ``/pasta/overlay`` and ``/diagnostics``;
3. writes overlays and a summary: frames in / processed / dropped, latency p50/p95, IoU
   against the ground truth;
4. calls ``/pasta/recalibrate`` with the second pair of bags while the bag keeps playing, and
   shows that output never stopped and the model id changed; always ends the node.

Outputs: ``OUT/ros/bags/``, ``OUT/ros/overlays/*.png`` (and ``overlays_after/``, the same
bag replayed with the new model), ``OUT/ros/models/`` (the recalibrated
model), ``OUT/ros/summary.json``, ``OUT/ros/node.log``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pasta_ros.core.metrics import CLASS_NAMES, ConfusionMatrix
from pasta_ros.core.report import write_rgb

ROOT = Path(__file__).resolve().parents[1]
CAMERA = "/demo/camera/image"
BAG_TOPIC = "/camera/image_raw"
START_NS = 1_700_000_000 * 1_000_000_000


def conveyor_frames(n: int, width: int, height: int, seed: int
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` conveyor scenes (RGB) and their ``(H, W) uint8`` ground-truth labels."""
    from pasta_ros.data.synth import render_scene

    frames, truth = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, 99, i])
        n_obj = int(rng.integers(5, 12))
        n_anom = int(rng.integers(0, 4)) if i % 2 else 0
        rgb, labels, _ = render_scene("steel", rng, width, height, n_obj - n_anom, n_anom)
        frames.append(rgb)
        truth.append(labels)
    return frames, truth


def write_bags(out: Path, frames: list[np.ndarray], width: int, height: int, seed: int,
               fps: float) -> dict[str, Path]:
    """The conveyor bag and a second calibration set (new seed) as bags."""
    from pasta_ros.data.bags import write_bag_images
    from pasta_ros.data.synth import generate
    from pasta_ros.sources import folder_source

    bags = out / "bags"
    paths = {"conveyor": bags / "conveyor"}
    write_bag_images(paths["conveyor"], BAG_TOPIC, frames, storage="mcap", fps=fps,
                     start_ns=START_NS, overwrite=True)
    data2 = generate("steel", out / "data2", seed=seed + 1, width=width, height=height,
                     n_baseline=24, n_reference=12, n_empty=4, n_test=0, overwrite=True)
    for name, folder, storage in (("baseline", data2.baseline, "mcap"),
                                  ("reference", data2.reference, "sqlite3"),
                                  ("empty", data2.empty, "mcap")):
        paths[name] = bags / name
        write_bag_images(paths[name], BAG_TOPIC, (rgb for _, rgb in folder_source(folder)()),
                         storage=storage, overwrite=True)
    return paths


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan")}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}


def play_and_record(session, outputs, player, truth: dict, rate: float, out: Path) -> dict:
    """Play the bag once, wait for the node to finish, score what came out; overlays go to
    ``out``."""
    from pasta_ros.ros.convert import labels_from_msg

    sent: dict[tuple[int, int], float] = {}
    outputs.clear()
    before = outputs.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 30.0)
    player.play(rate, on_publish=lambda i, s, t: sent.__setitem__(divmod(s, 10**9), t))
    last = max(sent)
    try:
        outputs.wait_frame(last, 120.0)
    except Exception:  # noqa: BLE001 - the last frame may have been lost in transit
        pass
    after = outputs.wait_diagnostics(lambda v: v["frames_in_flight"] == 0, 120.0)
    cm = ConfusionMatrix()
    latencies = []
    out.mkdir(parents=True, exist_ok=True)
    for stamp, labels_msg in sorted(outputs.labels.items()):
        if stamp not in truth:
            continue  # the warm-up frames
        cm.add(truth[stamp], labels_from_msg(labels_msg))
        arrival = next((t for t, s, _ in reversed(outputs.arrivals) if s == stamp), None)
        if arrival is not None and stamp in sent:
            latencies.append((arrival - sent[stamp]) * 1e3)
        ov = outputs.overlays.get(stamp)
        if ov is not None:
            rgb = np.frombuffer(ov.data, np.uint8).reshape(ov.height, ov.step)[:, :3 * ov.width]
            write_rgb(out / f"{stamp[0]}_{stamp[1]:09d}.png",
                      rgb.reshape(ov.height, ov.width, 3))
    counts = {k: after[k] - before[k] for k in ("frames_in", "frames_processed",
                                                  "frames_dropped", "frames_bad")}
    iou = cm.iou()
    return {"frames_sent": len(sent), **counts,
            "frames_out_received": sum(1 for s in outputs.labels if s in truth),
            "rate_hz_played": rate,
            "node_latency_ms": {"p50": after["latency_p50_ms"], "p95": after["latency_p95_ms"]},
            "end_to_end_latency_ms": percentiles(latencies),
            "iou": {n: round(float(v), 3) for n, v in zip(CLASS_NAMES, iou)},
            "miou": round(float(np.nanmean(iou)), 3)}


def recalibrate_live(session, outputs, player, bags: dict, rate: float) -> dict:
    """Phase 2: keep the bag playing, recalibrate, report the output gap and model ids."""
    from pasta_msgs.srv import Recalibrate

    stop = threading.Event()
    streamer = threading.Thread(target=player.play, args=(rate,),
                                kwargs={"loop": True, "stop": stop}, daemon=True)
    n0 = len(outputs.arrivals)
    streamer.start()
    try:
        outputs.wait(lambda: len(outputs.arrivals) > n0, 60.0)
        old = outputs.arrivals[-1][2]
        t_call = time.perf_counter()
        req = Recalibrate.Request(baseline_bag=str(bags["baseline"].resolve()),
                                  reference_bag=str(bags["reference"].resolve()),
                                  empty_bag=str(bags["empty"].resolve()), image_topic=BAG_TOPIC)
        res = session.client.call(Recalibrate, "/pasta/recalibrate", req, 900.0)
        t_done = time.perf_counter()
        outputs.wait(lambda: outputs.arrivals[-1][2] == res.model_id, 60.0)
        t_end = time.perf_counter() + 2.0
        outputs.wait(lambda: time.perf_counter() > t_end, 3.0)
    finally:
        stop.set()
        streamer.join(10.0)
    arrivals = [a for a in outputs.arrivals[n0:]]
    times = [t for t, _, _ in arrivals]
    gaps = np.diff(times) if len(times) > 1 else np.array([0.0])
    during = [a for a in arrivals if t_call <= a[0] <= t_done]
    return {"success": res.success, "message": res.message, "old_model_id": old,
            "new_model_id": res.model_id, "model_dir": res.model_dir,
            "recalibration_s": round(t_done - t_call, 1),
            "outputs_during_recalibration": len(during),
            "max_gap_between_outputs_s": round(float(gaps.max()), 2),
            "outputs_after_swap": sum(1 for a in arrivals if a[2] == res.model_id),
            "anomaly_clusters": [c.id for c in res.clusters if c.anomaly]}


def run(out: Path, n_frames: int, rate: float, seed: int) -> dict:
    from pasta_ros.ros.clients import BagPlayer
    from pasta_ros.testing.launch_args import node_command
    from pasta_ros.testing.ros_session import (
        Outputs,
        RosSession,
        handshake,
        image_msg,
        running_node,
    )

    model = out / "model"
    meta = json.loads((out / "data" / "meta.json").read_text())
    width, height = meta["width"], meta["height"]
    ros_out = out / "ros"
    if ros_out.exists():  # this demo's own outputs, recalibrated models included
        shutil.rmtree(ros_out)
    ros_out.mkdir(parents=True)
    frames, labels = conveyor_frames(n_frames, width, height, seed)
    bags = write_bags(ros_out, frames, width, height, seed, rate)
    truth = {divmod(START_NS + i * round(1e9 / rate), 10**9): lab for i, lab in enumerate(labels)}
    _, ros_args = node_command(ROOT / "launch" / "sorter.launch.py",
                               {"model_dir": str(model.resolve()), "image_topic": CAMERA},
                               share=ROOT, params_dir=ros_out)
    ros_args += ["-p", f"models_root:={(ros_out / 'models').resolve()}",
                 "-p", "diagnostics_period:=0.5"]
    print(f"== pasta_node --ros-args {' '.join(ros_args)}", flush=True)
    # large frames between processes of one machine: the shipped Fast DDS profile (shared
    # memory + loopback UDP); the default transports lose most best-effort 910x512 frames
    profile = str(ROOT / "config" / "fastdds_shm.xml")
    session = RosSession("pasta_demo", {"FASTRTPS_DEFAULT_PROFILES_FILE": profile,
                                        "FASTDDS_DEFAULT_PROFILES_FILE": profile})
    try:
        with running_node(session, ros_args, ros_out / "node.log") as node:
            print(f"== node up (pid {node.pid}, ROS_DOMAIN_ID {session.domain_id}, discovery "
                  "LOCALHOST)", flush=True)
            outputs = Outputs(session.client, overlay=True)
            outputs.wait_matched(60.0)
            player = BagPlayer(session.client, bags["conveyor"], BAG_TOPIC, CAMERA)
            handshake(player.pub, outputs, lambda ns: image_msg(frames[0], "rgb8", ns), 120.0)
            print(f"== playing {n_frames} conveyor frames at {rate} Hz", flush=True)
            summary = {"stream": play_and_record(session, outputs, player, truth, rate,
                                                 ros_out / "overlays")}
            print(json.dumps(summary["stream"], indent=1), flush=True)
            print("== recalibrating from a second pair of bags while frames keep flowing",
                  flush=True)
            summary["recalibration"] = recalibrate_live(session, outputs, player, bags, rate)
            print(json.dumps(summary["recalibration"], indent=1), flush=True)
            print("== the same bag again, with the new model", flush=True)
            summary["after_recalibration"] = play_and_record(
                session, outputs, player, truth, rate, ros_out / "overlays_after")
            print(json.dumps(summary["after_recalibration"], indent=1), flush=True)
    finally:
        session.close()
    summary["node_command"] = ["pasta_node", "--ros-args", *ros_args]
    (ros_out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--frames", type=int, default=24, help="conveyor frames in the bag")
    ap.add_argument("--rate", type=float, default=4.0, help="camera rate in Hz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.out / "model" / "manifest.json").is_file():
        print(f"error: {args.out}/model is missing: run `python -m pasta_ros.demo --out "
              f"{args.out}` first", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    s = run(args.out, args.frames, args.rate, args.seed)
    st, rc = s["stream"], s["recalibration"]
    ok = rc["success"] and rc["new_model_id"] != rc["old_model_id"] \
        and rc["outputs_during_recalibration"] > 0
    print(f"\nPASTA ROS demo in {time.perf_counter() - t0:.0f} s: {st['frames_in']} frames in, "
          f"{st['frames_processed']} processed, {st['frames_dropped']} dropped, "
          f"{st['frames_bad']} bad; latency p50 {st['end_to_end_latency_ms']['p50']} ms, "
          f"p95 {st['end_to_end_latency_ms']['p95']} ms; mIoU {st['miou']}")
    print(f"  recalibration: {'ok' if rc['success'] else 'FAILED'} in {rc['recalibration_s']} s, "
          f"model {rc['old_model_id']} -> {rc['new_model_id']}, "
          f"{rc['outputs_during_recalibration']} outputs during it, longest output gap "
          f"{rc['max_gap_between_outputs_s']} s; mIoU with the new model "
          f"{s['after_recalibration']['miou']}")
    print(f"  outputs in {args.out}/ros/ (summary.json, overlays/, node.log)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
