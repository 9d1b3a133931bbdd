"""`pasta recalibrate | prompts | echo | play`: command-line clients of a running pasta_node.

rclpy and pasta_msgs are imported when a command runs, so ``pasta --help`` works without ROS.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from pasta_ros.core.errors import PastaError
from pasta_ros.ros.clients import BagPlayer, ClientNode, call_once, send_goal


def register(sub: argparse._SubParsersAction) -> None:
    """Add the recalibrate, prompts, echo and play subcommands to ``pasta``'s subparsers."""
    r = sub.add_parser("recalibrate", help="recalibrate a running pasta_node from bags (its "
                                           "recalibrate action, with a progress bar)")
    r.add_argument("--baseline-bag", type=Path, required=True, help="mixed stream bag")
    r.add_argument("--reference-bag", type=Path, required=True, help="targets-only bag")
    r.add_argument("--empty-bag", type=Path, help="optional empty-scene bag")
    r.add_argument("--topic", default="", help="image topic in the bags (default: the node's)")
    r.add_argument("--clusters", type=int, default=-1, help="K override (default: node's)")
    r.add_argument("--ratio-threshold", type=float, default=-1.0, help="override")
    r.add_argument("--vote-threshold", type=float, default=-1.0, help="override")
    r.add_argument("--action", default="pasta/recalibrate", help="action name")
    r.add_argument("--service", help="call this service instead of the action (one call, "
                                     "no progress)")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait in all")
    r.set_defaults(func=cmd_recalibrate)

    q = sub.add_parser("prompts", help="set or clear a running pasta_node's iCAS prompts")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--normal", nargs="+", type=Path, metavar="IMAGE",
                      help="normal shots (image files)")
    what.add_argument("--anomaly", type=Path, metavar="IMAGE",
                      help="one anomaly image (with --mask, or --points/--boxes)")
    what.add_argument("--normal-bag", type=Path, metavar="BAG",
                      help="normal shots: the first --max-images frames of a bag")
    what.add_argument("--anomaly-bag", type=Path, metavar="BAG",
                      help="anomaly prompt: the first frame of a bag (with --mask or clicks)")
    what.add_argument("--clear", choices=("normal", "anomaly", "all"))
    q.add_argument("--mask", type=Path, help="anomaly mask image (nonzero = anomaly)")
    q.add_argument("--points", default="", help="clicks 'x,y;x,y' in image pixels")
    q.add_argument("--boxes", default="", help="boxes 'x0,y0,x1,y1;...' in image pixels")
    q.add_argument("--negative-points", default="",
                   help="clicks on what is NOT the anomaly, 'x,y;x,y' (with --points/--boxes)")
    q.add_argument("--topic", default="", help="image topic in the bag (default: the node's)")
    q.add_argument("--max-images", type=int, default=0, help="frames from a bag (0: node's)")
    q.add_argument("--service", default="pasta/set_prompts", help="service name")
    q.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    q.set_defaults(func=cmd_prompts)

    e = sub.add_parser("echo", help="print instance summaries from pasta/anomaly_masks")
    e.add_argument("--topic", default="pasta/anomaly_masks")
    e.add_argument("--count", type=int, default=0, help="stop after N messages (0 = never)")
    e.add_argument("--timeout", type=float, default=0.0, help="stop after S seconds (0 = never)")
    e.set_defaults(func=cmd_echo)

    p = sub.add_parser("play", help="publish a bag's images (Image or CompressedImage)")
    p.add_argument("bag", type=Path)
    p.add_argument("--topic", default="", help="topic in the bag (default: its only image "
                                               "topic)")
    p.add_argument("--to", default="", help="publish on this topic (default: the bag's)")
    p.add_argument("--rate", type=float, default=0.0, help="frames per second (default: the "
                                                           "recorded timing)")
    p.add_argument("--loop", action="store_true", help="repeat until interrupted")
    p.add_argument("--restamp", action="store_true", help="set header stamps to now")
    p.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for a subscriber before playing")
    p.set_defaults(func=cmd_play)


def _absolute(path: Path | None) -> str:
    """Absolute path when it exists here (the node may run elsewhere: then as given)."""
    if path is None:
        return ""
    return str(path.resolve()) if path.exists() else str(path)


def cmd_recalibrate(args: argparse.Namespace) -> dict[str, Any]:
    from pasta_msgs.action import Recalibrate as RecalibrateAction
    from pasta_msgs.srv import Recalibrate

    fields = dict(baseline_bag=_absolute(args.baseline_bag),
                  reference_bag=_absolute(args.reference_bag),
                  empty_bag=_absolute(args.empty_bag), image_topic=args.topic,
                  clusters=args.clusters, ratio_threshold=args.ratio_threshold,
                  vote_threshold=args.vote_threshold)
    if args.service:
        res = call_once(Recalibrate, args.service, Recalibrate.Request(**fields), args.timeout)
    else:
        res = _recalibrate_action(RecalibrateAction, args.action, fields, args.timeout,
                                  quiet=getattr(args, "quiet", False))
    return {"success": True, "message": res.message, "model_id": res.model_id,
            "model_dir": res.model_dir, "clusters": len(res.clusters),
            "anomaly_clusters": [c.id for c in res.clusters if c.anomaly],
            "background_clusters": [c.id for c in res.clusters if c.background]}


def _recalibrate_action(action_type, name: str, fields: dict, timeout: float, *,
                        quiet: bool):
    """The action goal with a progress bar (images through the backbone, then the phase)."""
    from action_msgs.msg import GoalStatus
    from tqdm import tqdm

    bar = tqdm(total=0, unit="img", desc="reading", disable=quiet, leave=False)

    def on_feedback(fb) -> None:
        if fb.images_total and bar.total != fb.images_total:
            bar.total = fb.images_total
        bar.n = fb.images_done
        bar.set_description(fb.phase)
        bar.refresh()

    client = ClientNode("pasta_recalibrate_client")
    try:
        status, res = send_goal(client, action_type, name, action_type.Goal(**fields), timeout,
                                on_feedback)
    finally:
        bar.close()
        client.close()
    if status != GoalStatus.STATUS_SUCCEEDED or not res.success:
        raise PastaError(res.message or f"recalibration ended with goal status {status}")
    return res


def _numbers(text: str) -> list[float]:
    """'x,y;x,y' -> flat list of floats (the service takes flat arrays)."""
    try:
        return [float(v) for part in text.split(";") if part for v in part.split(",")]
    except ValueError:
        raise PastaError(f"expected numbers like 'x,y;x,y', got {text!r}") from None


def prompts_request(args: argparse.Namespace):
    """The ``SetPrompts`` request for ``pasta prompts`` arguments."""
    from pasta_msgs.srv import SetPrompts

    req = SetPrompts.Request(image_topic=args.topic, max_images=max(args.max_images, 0),
                             mask_file=_absolute(args.mask), points=_numbers(args.points),
                             boxes=_numbers(args.boxes))
    negative = _numbers(getattr(args, "negative_points", ""))
    if negative:
        if not hasattr(req, "negative_points"):
            raise PastaError("this pasta_msgs has no SetPrompts.negative_points: rebuild it "
                             "(bash scripts/build_msgs.sh <venv>)")
        req.negative_points = negative
    if args.clear:
        req.action = "clear" if args.clear == "all" else f"clear_{args.clear}"
    elif args.normal or args.normal_bag:
        req.action = "normal"
    else:
        req.action = "anomaly"
    if args.normal:
        req.image_files = [_absolute(p) for p in args.normal]
    elif args.anomaly:
        req.image_files = [_absolute(args.anomaly)]
    req.bag = _absolute(args.normal_bag or args.anomaly_bag)
    if req.action == "anomaly" and args.anomaly_bag:
        req.max_images = 1
    return req


def cmd_prompts(args: argparse.Namespace) -> dict[str, Any]:
    from pasta_msgs.srv import SetPrompts

    res = call_once(SetPrompts, args.service, prompts_request(args), args.timeout)
    return {"success": True, "message": res.message, "normal_shots": res.normal_shots,
            "anomaly_prompt": res.anomaly_prompt}


def format_instances(msg) -> str:
    """One line per InstanceArray plus one per instance (for ``pasta echo``)."""
    stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
    n_anom = sum(1 for i in msg.instances if i.class_id == 2)
    lines = [f"{stamp} {msg.header.frame_id} {msg.image_width}x{msg.image_height} "
             f"model {msg.model_id} {msg.processing_time_ms:.1f} ms: "
             f"{len(msg.instances)} instance(s), {n_anom} anomaly"]
    for i in msg.instances:
        kind = "anomaly" if i.class_id == 2 else "target"
        b = i.bbox
        lines.append(f"  #{i.id} {kind:7s} score {i.score:.3f} bbox {b.x_offset},{b.y_offset} "
                     f"{b.width}x{b.height} area {i.area} centroid ({i.centroid.x:.1f}, "
                     f"{i.centroid.y:.1f})")
    return "\n".join(lines)


def cmd_echo(args: argparse.Namespace) -> None:
    from pasta_msgs.msg import InstanceArray

    received = threading.Event()
    count = [0]

    def on_msg(msg) -> None:
        print(format_instances(msg), flush=True)
        count[0] += 1
        if args.count and count[0] >= args.count:
            received.set()

    client = ClientNode("pasta_echo")
    try:
        client.node.create_subscription(InstanceArray, args.topic, on_msg, 10)
        received.wait(args.timeout if args.timeout > 0 else None)
    finally:
        client.close()
    if args.count and count[0] < args.count:
        raise PastaError(f"got {count[0]} of {args.count} messages on {args.topic} within "
                         f"{args.timeout:.0f} s")


def cmd_play(args: argparse.Namespace) -> dict[str, Any]:
    client = ClientNode("pasta_play")
    try:
        player = BagPlayer(client, args.bag, args.topic, args.to)
        topic = player.pub.topic_name
        if not player.wait_for_subscriber(args.wait):
            raise PastaError(f"nobody subscribes to {topic} after {args.wait} s")
        t0 = time.perf_counter()
        sent = player.play(args.rate, loop=args.loop, restamp=args.restamp)
        seconds = time.perf_counter() - t0
    finally:
        client.close()
    return {"bag": str(args.bag), "topic": topic, "frames": sent,
            "seconds": round(seconds, 2)}
