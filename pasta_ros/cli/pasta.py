"""`pasta synth | calibrate | segment | evaluate`: the PASTA commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pasta_ros.cli.args import add_config_args, config_from_args, parse_ints, parse_size
from pasta_ros.core.errors import PastaError

if TYPE_CHECKING:
    from pasta_ros.data.layout import DatasetLayout
    from pasta_ros.pipeline import PastaPipeline


def register(sub: argparse._SubParsersAction) -> None:
    """Add synth, calibrate, segment and evaluate to the ``pasta`` sub-parsers."""
    _synth_parser(sub.add_parser("synth", help="generate a synthetic dataset (steel, plants or "
                                               "a conveyor preset)"))
    _calibrate_parser(sub.add_parser("calibrate",
                                     help="fit PASTA on a baseline and a reference set"))
    _segment_parser(sub.add_parser("segment",
                                   help="segment images or a bag with a calibrated model"))
    _evaluate_parser(sub.add_parser(
        "evaluate", help="Evaluations A and B on a test set, or a seed x K grid"))


def _synth_parser(s: argparse.ArgumentParser) -> None:
    from pasta_ros.data.synth import PRESETS

    s.add_argument("--preset", choices=tuple(PRESETS), default="steel")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=parse_size, default=(910, 512), help="image WxH")
    for name, default in (("baseline", 80), ("reference", 40), ("empty", 12), ("test", 30)):
        s.add_argument(f"--n-{name}", type=int, default=default)
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    s.add_argument("--touch", type=float, help="conveyor presets: share of objects placed "
                   "touching or overlapping another (0-1)")
    s.add_argument("--thin", type=float, help="conveyor presets: share of wires and rods (0-1)")
    s.add_argument("--scale", type=float, help="conveyor presets: object scale, camera height "
                   "(0.5 high .. 2 low)")
    s.add_argument("--look", help="conveyor presets: belt look (green_pvc, black_rubber, "
                   "tan_canvas, blue_mesh)")
    s.add_argument("--gradient", action=argparse.BooleanOptionalAction, default=None,
                   help="conveyor presets: scene-wide lighting gradient")
    s.add_argument("--blur", action=argparse.BooleanOptionalAction, default=None,
                   help="conveyor presets: motion blur along the belt")
    s.set_defaults(func=cmd_synth)


def _calibrate_parser(c: argparse.ArgumentParser) -> None:
    c.add_argument("--baseline", type=Path, required=True, help="image folder or bag")
    c.add_argument("--reference", type=Path, required=True, help="image folder or bag")
    c.add_argument("--empty", type=Path, help="optional empty-scene folder or bag")
    c.add_argument("--topic", help="image topic when the sets are ROS 2 bags")
    c.add_argument("--out", type=Path, required=True, help="model directory to write")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out (in "
                   "one step, once the new model is complete)")
    add_config_args(c)
    c.set_defaults(func=cmd_calibrate)


def _segment_parser(g: argparse.ArgumentParser) -> None:
    g.add_argument("--model", type=Path, required=True)
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path)
    src.add_argument("--bag", type=Path)
    g.add_argument("--topic", help="image topic of --bag")
    g.add_argument("--out", type=Path, required=True, help="results folder (labels/, "
                   "overlays/, instances.json)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out (in "
                   "one step, once every image is done)")
    add_config_args(g)
    g.set_defaults(func=cmd_segment)


def _evaluate_parser(e: argparse.ArgumentParser) -> None:
    e.add_argument("--model", type=Path, help="calibrated model (with --test)")
    e.add_argument("--test", type=Path, help="dataset root or its test folder (images/, "
                   "masks/ and/or labels.csv)")
    e.add_argument("--data", type=Path, help="dataset root: calibrate per seed and K")
    e.add_argument("--seeds", type=parse_ints, default=[0, 1, 2, 3, 4])
    e.add_argument("--cluster-grid", "--clusters-list", dest="cluster_grid", type=parse_ints,
                   help="K values for --data (default: --clusters or 20)")
    e.add_argument("--no-empty", action="store_true", help="ignore D/empty (border fallback)")
    e.add_argument("--json", type=Path, help="write the metrics here")
    e.add_argument("--icas", choices=("off", "replace", "combine"), default="off",
                   help="with --model: iCAS normal prompting as the anomaly vote, instead of "
                        "(replace) or together with (combine) the anomaly clusters")
    e.add_argument("--icas-normal", type=Path,
                   help="folder of normal shots (default: the dataset's reference/)")
    e.add_argument("--icas-shots", type=int, default=4,
                   help="normal shots k (0: no normal prompt; needs --icas-anomaly-image)")
    e.add_argument("--icas-anomaly-image", type=Path, help="anomaly prompt image")
    e.add_argument("--icas-anomaly-mask", type=Path,
                   help="its anomaly mask (nonzero = anomaly, same size)")
    e.add_argument("--icas-seed", type=int, default=0, help="which k shots (seeded draw)")
    e.add_argument("--icas-threshold", type=float, default=0.5, help="iCAS patch threshold")
    e.add_argument("--icas-checkpoint", type=Path, help="default: the shipped checkpoint")
    e.add_argument("--icas-two-pass", action="store_true",
                   help="the iCAS vote runs its own encoder at the checkpoint's size instead "
                        "of scoring on PASTA's backbone features (the default when the "
                        "backbones and weights are the same)")
    e.add_argument("--icas-max-cells", type=int, default=1200,
                   help="shared features pooled to at most this many cells before the iCAS "
                        "decoder (0: PASTA's full grid)")
    e.add_argument("--icas-decoder-backend", choices=("onnxruntime", "torch"),
                   default="onnxruntime",
                   help="with shared features on the CPU: the iCAS decoder's ONNX Runtime "
                        "graph (default) or the torch decoder")
    add_config_args(e)
    e.set_defaults(func=cmd_evaluate)


def cmd_synth(args: argparse.Namespace) -> dict:
    from pasta_ros.data.synth import generate
    try:
        generate(args.preset, args.out, seed=args.seed, width=args.size[0],
                 height=args.size[1], n_baseline=args.n_baseline, n_reference=args.n_reference,
                 n_empty=args.n_empty, n_test=args.n_test, overwrite=args.overwrite,
                 **{k: getattr(args, k, None) for k in ("touch", "thin", "scale", "look",
                                                         "gradient", "blur")})
    except ValueError as exc:  # bad counts, sizes or options: a user error
        raise PastaError(str(exc)) from None
    return {"dataset": str(args.out), "preset": args.preset, "seed": args.seed}


def cmd_calibrate(args: argparse.Namespace) -> dict:
    from pasta_ros.calibration_job import calibrate_paths
    from pasta_ros.data.outputs import fresh_output

    cfg, _ = config_from_args(args)
    with fresh_output(args.out, overwrite=args.overwrite, what="a new model") as tmp:
        summary = calibrate_paths(cfg, args.baseline, args.reference, args.empty, tmp,
                                  topic=args.topic, quiet=args.quiet)
    return summary | {"model": str(args.out)}


def cmd_segment(args: argparse.Namespace) -> dict:
    from pasta_ros.data.images import ReadStats
    from pasta_ros.data.outputs import fresh_output
    from pasta_ros.pipeline import PastaPipeline
    from pasta_ros.sources import bag_source, folder_source

    cfg, explicit = config_from_args(args)
    pipe = PastaPipeline.load(args.model, cfg, explicit=explicit)
    stats = ReadStats()
    if args.bag:
        if not args.topic:
            raise PastaError("--bag needs --topic (the image topic to read)")
        source = bag_source(args.bag, args.topic)
    else:
        source = folder_source(args.images, stats, max_pixels=cfg.max_image_pixels)
    with fresh_output(args.out, overwrite=args.overwrite, what="segmentation results") as tmp:
        summary, times = _segment_into(pipe, source, tmp)
        if not summary:
            where = args.bag or args.images
            raise PastaError(f"no image could be segmented from {where} "
                             f"({stats.summary() if not args.bag else 'no frames'}); "
                             f"nothing was written to {args.out}")
    return {"frames": len(summary), "skipped": stats.n_skipped, "out": str(args.out),
            "ms_per_frame": round(sum(times) / len(times), 1)}


def _segment_into(pipe, source, out: Path) -> tuple[list[dict], list[float]]:
    """Segment every image of ``source`` into ``out`` (labels/, overlays/, instances.json)."""
    import cv2

    from pasta_ros.core.report import overlay_labels, write_rgb

    summary, times = [], []
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for name, image in source():
        r = pipe.process(image)
        times.append(r.timings["total"])
        write_rgb(out / "overlays" / f"{name}.png", overlay_labels(image, r.labels))
        cv2.imwrite(str(out / "labels" / f"{name}.png"), r.labels)
        summary.append({"image": name, "model_id": r.model_id,
                        "instances": [i.to_json() for i in r.instances]})
    (out / "instances.json").write_text(json.dumps(summary, indent=1))
    return summary, times


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from pasta_ros.core.backbones import weights_fingerprint
    from pasta_ros.data.layout import DatasetLayout
    from pasta_ros.evaluation import evaluate, evaluate_grid, format_summary, save_json
    from pasta_ros.pipeline import PastaPipeline, build_extractor, icas_pipeline_config
    from pasta_ros.sources import folder_source

    cfg, explicit = config_from_args(args)
    if args.data:
        layout = DatasetLayout.discover(args.data)
        empty = None if args.no_empty or layout.empty is None else folder_source(layout.empty)
        sources = (folder_source(layout.baseline), folder_source(layout.reference), empty)
        grid = args.cluster_grid or [cfg.clusters]
        result = evaluate_grid(layout, cfg, build_extractor(cfg), args.seeds, grid, sources,
                               weights_hash=weights_fingerprint(cfg.backbone, cfg.weights),
                               quiet=args.quiet)
        result["config"] = cfg.to_dict() | {"empty_set": empty is not None}
        print(format_summary(result["summary"]), file=sys.stderr)
    elif args.model and args.test:
        icas_on = getattr(args, "icas", "off") != "off"
        cfg = icas_pipeline_config(cfg, icas_on, not getattr(args, "icas_two_pass", False))
        pipe = PastaPipeline.load(args.model, cfg, explicit=explicit)
        layout = DatasetLayout.for_test(args.test)
        vote, icas_info = icas_vote_from_args(args, layout, pipe)
        result = evaluate(pipe, layout, quiet=args.quiet, icas=vote)
        result["model_id"] = pipe.model.model_id
        if icas_info:
            result["icas"] = icas_info
    else:
        raise PastaError("evaluate needs either --model MODEL --test DIR or --data DIR")
    if args.json:
        save_json(args.json, result)
    return result if not args.data else result["summary"]


def icas_vote_from_args(args: argparse.Namespace, layout: DatasetLayout,
                        pipe: PastaPipeline | None = None):
    """``pasta evaluate --icas MODE``: an IcasVote prompted with k seeded normal shots, and a
    description of it for the results; (None, None) when ``--icas off``. With ``pipe`` (and
    no ``--icas-two-pass``) the vote scores on its backbone features when it can."""
    if getattr(args, "icas", "off") == "off":
        return None, None
    import numpy as np

    from pasta_ros.core.icas.model import default_checkpoint
    from pasta_ros.core.icas.prompting import ICASPredictor
    from pasta_ros.core.icas.vote import IcasVote
    from pasta_ros.data.images import list_images, read_image
    from pasta_ros.export.icas_decoder import use_decoder_backend

    if bool(args.icas_anomaly_image) != bool(args.icas_anomaly_mask):
        raise PastaError("--icas-anomaly-image and --icas-anomaly-mask go together")
    if args.icas_shots < 0 or (args.icas_shots == 0 and not args.icas_anomaly_image):
        raise PastaError("--icas needs a prompt: --icas-shots k >= 1 normal shots and/or "
                         "--icas-anomaly-image with --icas-anomaly-mask")
    ckpt = args.icas_checkpoint or default_checkpoint()
    predictor = ICASPredictor.from_checkpoint(ckpt)
    shared = (pipe is not None and not getattr(args, "icas_two_pass", False)
              and pipe.share_icas_backbone(predictor, args.icas_max_cells))
    use_decoder_backend(predictor, getattr(args, "icas_decoder_backend", "onnxruntime"))
    info = {"mode": args.icas, "checkpoint": str(ckpt), "threshold": args.icas_threshold,
            "shots": args.icas_shots, "shared_backbone": shared,
            "input_size": list(predictor.model.input_size),
            "max_cells": predictor.max_cells}
    if args.icas_shots:
        folder = args.icas_normal or layout.reference
        if folder is None:
            raise PastaError("--icas-shots needs normal images: --icas-normal DIR")
        paths = list_images(folder)
        if args.icas_shots > len(paths):
            raise PastaError(f"--icas-shots {args.icas_shots}: {folder} holds {len(paths)} "
                             "images")
        pick = sorted(np.random.default_rng(args.icas_seed).choice(len(paths), args.icas_shots,
                                                                   replace=False))
        predictor.set_normal_prompt([read_image(paths[i]) for i in pick])
        info |= {"shot_seed": args.icas_seed, "normal": [paths[i].name for i in pick]}
    if args.icas_anomaly_image:
        predictor.set_anomaly_prompt(read_image(args.icas_anomaly_image),
                                     read_image(args.icas_anomaly_mask)[..., 0] > 0)
        info["anomaly_prompt"] = str(args.icas_anomaly_image)
    return IcasVote(predictor, args.icas, args.icas_threshold), info
