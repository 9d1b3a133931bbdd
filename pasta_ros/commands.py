"""The CLI's command bodies (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from pasta_ros.cli import config_from_args
from pasta_ros.config import PastaConfig
from pasta_ros.core.backbones import build_backbone, weights_fingerprint
from pasta_ros.core.calibration import calibrate
from pasta_ros.core.clustering import assign_clusters
from pasta_ros.core.errors import PastaError
from pasta_ros.core.features import FeatureExtractor, resolve_device
from pasta_ros.core.model_io import CalibratedModel, save_model
from pasta_ros.core.report import overlay_clusters, overlay_labels, plot_distributions, write_rgb
from pasta_ros.data.images import ReadStats
from pasta_ros.data.layout import DatasetLayout
from pasta_ros.export.cli import cmd_export  # noqa: F401 - `pasta export`
from pasta_ros.pipeline import PastaPipeline
from pasta_ros.ros.clients import (  # noqa: F401
    cmd_echo,
    cmd_play,
    cmd_prompts,
    cmd_recalibrate,
)
from pasta_ros.sources import bag_source, folder_source, open_source

log = logging.getLogger("pasta")


def make_extractor(cfg: PastaConfig) -> FeatureExtractor:
    backbone = build_backbone(cfg.backbone, cfg.weights)
    return FeatureExtractor(backbone, (cfg.input_width, cfg.input_height),
                            resolve_device(cfg.device), cfg.color_weight)


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


def write_report(model: CalibratedModel, extractor: FeatureExtractor, source, out: Path,
                 n: int = 4) -> None:
    """Fig. 1 and cluster-map overlays of the first ``n`` baseline images under out/report."""
    plot_distributions(model, out / "report" / "cluster_distributions.png")
    checks = model.stats.get("self_checks", [])  # issue 9: one sentence per finding
    (out / "report" / "self_checks.txt").write_text(
        "".join(f"{c['code']}: {c['message']}\n" for c in checks) or "all self-checks passed\n")
    centers = torch.from_numpy(model.centers).to(extractor.device)
    for i, (name, image) in enumerate(source()):
        if i >= n:
            break
        prepared = extractor.prepare(image)
        cmap = assign_clusters(extractor.features([prepared]), centers)[0].cpu().numpy()
        write_rgb(out / "report" / f"clusters_{name}.png",
                  overlay_clusters(prepared, cmap, model.anomaly))


def cmd_calibrate(args: argparse.Namespace) -> dict:
    cfg, _ = config_from_args(args)
    stats = ReadStats()
    baseline = open_source(args.baseline, args.topic, stats=stats)
    reference = open_source(args.reference, args.topic, stats=stats)
    empty = open_source(args.empty, args.topic, stats=stats) if args.empty else None
    extractor = make_extractor(cfg)
    model = calibrate(extractor, baseline, reference, empty, cfg,
                      weights_hash=weights_fingerprint(cfg.backbone, cfg.weights),
                      quiet=args.quiet)
    model.stats["skipped_images"] = stats.n_skipped
    save_model(model, args.out)
    write_report(model, extractor, baseline, args.out)
    return {"model": str(args.out), "model_id": model.model_id,
            "anomaly_clusters": np.flatnonzero(model.anomaly).tolist(),
            "background_clusters": np.flatnonzero(model.background).tolist(),
            "background_source": model.background_source, **model.stats}


def cmd_segment(args: argparse.Namespace) -> dict:
    cfg, explicit = config_from_args(args)
    pipe = PastaPipeline.load(args.model, cfg, explicit=explicit)
    stats = ReadStats()
    if args.bag:
        if not args.topic:
            raise PastaError("--bag needs --topic (the image topic to read)")
        source = bag_source(args.bag, args.topic)
    else:
        source = folder_source(args.images, stats)
    out = Path(args.out)
    summary, times = [], []
    for name, image in source():
        r = pipe.process(image)
        times.append(r.timings["total"])
        write_rgb(out / "overlays" / f"{name}.png", overlay_labels(image, r.labels))
        (out / "labels").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "labels" / f"{name}.png"), r.labels)
        summary.append({"image": name, "model_id": r.model_id,
                        "instances": [i.to_json() for i in r.instances]})
    (out / "instances.json").write_text(json.dumps(summary, indent=1))
    return {"frames": len(summary), "skipped": stats.n_skipped, "out": str(out),
            "ms_per_frame": round(float(np.mean(times)), 1) if times else None}


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from pasta_ros.evaluation import evaluate, evaluate_grid, format_summary, save_json
    cfg, explicit = config_from_args(args)
    if args.data:
        layout = DatasetLayout.discover(args.data)
        empty = None if args.no_empty or layout.empty is None else folder_source(layout.empty)
        sources = (folder_source(layout.baseline), folder_source(layout.reference), empty)
        grid = args.cluster_grid or [cfg.clusters]
        result = evaluate_grid(layout, cfg, make_extractor(cfg), args.seeds, grid, sources,
                               weights_hash=weights_fingerprint(cfg.backbone, cfg.weights),
                               quiet=args.quiet)
        result["config"] = cfg.to_dict() | {"empty_set": empty is not None}
        print(format_summary(result["summary"]), file=sys.stderr)
    elif args.model and args.test:
        pipe = PastaPipeline.load(args.model, cfg, explicit=explicit)
        layout = DatasetLayout.for_test(args.test)
        vote, icas_info = icas_vote_from_args(args, layout)
        result = evaluate(pipe, layout, quiet=args.quiet, icas=vote)
        result["model_id"] = pipe.model.model_id
        if icas_info:
            result["icas"] = icas_info
    else:
        raise PastaError("evaluate needs either --model MODEL --test DIR or --data DIR")
    if args.json:
        save_json(args.json, result)
    return result if not args.data else result["summary"]


def icas_vote_from_args(args: argparse.Namespace, layout: DatasetLayout):
    """``pasta evaluate --icas MODE``: an IcasVote prompted with k seeded normal shots, and a
    description of it for the results; (None, None) when ``--icas off``."""
    if getattr(args, "icas", "off") == "off":
        return None, None
    from pasta_ros.core.icas.model import default_checkpoint
    from pasta_ros.core.icas.prompting import ICASPredictor
    from pasta_ros.core.icas.vote import IcasVote
    from pasta_ros.data.images import list_images, read_image

    if bool(args.icas_anomaly_image) != bool(args.icas_anomaly_mask):
        raise PastaError("--icas-anomaly-image and --icas-anomaly-mask go together")
    if args.icas_shots < 0 or (args.icas_shots == 0 and not args.icas_anomaly_image):
        raise PastaError("--icas needs a prompt: --icas-shots k >= 1 normal shots and/or "
                         "--icas-anomaly-image with --icas-anomaly-mask")
    ckpt = args.icas_checkpoint or default_checkpoint()
    predictor = ICASPredictor.from_checkpoint(ckpt)
    info = {"mode": args.icas, "checkpoint": str(ckpt), "threshold": args.icas_threshold,
            "shots": args.icas_shots}
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


def cmd_bench(args: argparse.Namespace) -> dict:
    from pasta_ros import bench
    result = getattr(bench, f"bench_{args.what}")(args)
    if args.json:
        from pasta_ros.evaluation import save_json
        save_json(args.json, result)
    return result


def cmd_icas(args: argparse.Namespace) -> dict:
    from pasta_ros.core.icas.cli import cmd_icas as run
    return run(args)
