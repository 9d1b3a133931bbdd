"""``pasta icas train | segment | evaluate | export``: iCAS in-context anomaly segmentation.

``register(subparsers)`` adds the ``icas`` command; each of its sub-commands sets its own
handler (``set_defaults(func=...)``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pasta_ros.cli.args import parse_ints, parse_points, parse_size


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=("generic", "anomaly"), required=True)
    p.add_argument("--out", type=Path, required=True, help="checkpoint file (resumed if present)")
    p.add_argument("--init", type=Path, help="start from this checkpoint (e.g. the generic one)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default per stage)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop and save after N s")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--input-size", type=parse_size, default=(224, 224))
    p.add_argument("--layers", type=int, default=6, help="transformer decoder layers")
    p.add_argument("--queries", type=int, default=48, help="content queries K")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--no-gqs", action="store_true", help="learned content queries")
    p.add_argument("--tiny-backbone", action="store_true", help="random-init encoder (tests)")


DEFAULT_STEPS = {"generic": 400, "anomaly": 1200}


def cmd_icas_train(args: argparse.Namespace) -> dict:
    from pasta_ros.core.icas.model import default_arch
    from pasta_ros.training.icas_train import TrainConfig, train

    cfg = TrainConfig(stage=args.stage, steps=args.steps or DEFAULT_STEPS[args.stage],
                      batch=args.batch, lr=args.lr, seed=args.seed, save_every=args.save_every,
                      time_limit=args.time_limit)
    arch = default_arch(args.backbone, tiny=args.tiny_backbone, input_size=args.input_size,
                        layers=args.layers, queries=args.queries, hidden=args.hidden,
                        gqs=not args.no_gqs)
    return train(cfg, args.out, arch, init=args.init,
                 progress=not getattr(args, "quiet", False))


def _default_ckpt() -> Path:
    from pasta_ros.core.icas.model import default_checkpoint

    return default_checkpoint()


DEFAULT_CKPT = _default_ckpt()


def _segment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--images", type=Path, required=True, help="folder of images to segment")
    p.add_argument("--out", type=Path, required=True, help="folder for score and mask PNGs")
    p.add_argument("--normal", type=Path, help="folder of normal images (normal prompting)")
    p.add_argument("--shots", type=int, default=4, help="normal images used from --normal")
    p.add_argument("--prompt-image", type=Path, help="anomaly prompt image")
    p.add_argument("--prompt-mask", type=Path, help="its mask (nonzero = anomaly)")
    p.add_argument("--points", type=parse_points, default=[],
                   help="clicks on --prompt-image: 'x,y;x,y'")
    p.add_argument("--boxes", type=parse_points, default=[], help="boxes on --prompt-image: "
                   "'x0,y0,x1,y1;...'")
    p.add_argument("--negative-points", type=parse_points, default=[],
                   help="clicks on --prompt-image on what is NOT the anomaly: 'x,y;x,y'")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default="cpu")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="dataset roots (PASTA layout), or folders holding several")
    p.add_argument("--seeds", type=parse_ints, default=[0, 1, 2, 3, 4])
    p.add_argument("--shots", type=parse_ints, default=[2, 4, 8])
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--shot-augment", choices=("none", "flip", "dihedral"), default="none",
                   help="views of each normal shot in the memory (flip: 4, dihedral: 8)")
    p.add_argument("--calib-defects", type=int, default=2,
                   help="synthetic-defect copies per shot calibrating the icas_fused row "
                        "(0: no fused row)")
    p.add_argument("--fusion-margin", type=float, default=None,
                   help="icas_fused gate: a non-anchor component joins only when its "
                        "calibration AUROC beats the anchors' by more than this many "
                        "standard errors (default: the chosen GAIN_MARGIN_Z; inf: anchors only)")
    p.add_argument("--tta-copies", type=int, default=4,
                   help="EL-defect copies per shot the icas_tta head is fitted on (0: no row)")
    p.add_argument("--calib-style", choices=("generic", "el"), default="generic",
                   help="defects pasted on the shots to calibrate the fusion gate")
    p.add_argument("--tta-fusion", choices=("gate", "anchor"), default=None,
                   help="icas_fused: icas_tta gated like the decoder, or an anchor (weight 1); "
                        "default: the chosen TTA_ANCHOR")
    p.add_argument("--dump-scores", action="store_true",
                   help="also write every per-image and calibration score to the JSON")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="WxH",
                   help="max network input the images are encoded at (aspect kept; default: "
                        "the checkpoint's training size)")
    p.add_argument("--json", type=Path)


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--out", type=Path, required=True, help="ONNX file")
    p.add_argument("--input-size", type=parse_size, default=(518, 518),
                   help="frame WxH the graph serves (fixes the feature grid)")
    p.add_argument("--n-prompt", type=int, default=1, help="prompt tokens (0: normal prompting)")
    p.add_argument("--n-ntp", type=int, default=1, help="non-target tokens (k normal shots)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``icas {train,segment,evaluate,export}`` to the ``pasta`` subparsers."""
    icas = sub.add_parser("icas", help="iCAS in-context anomaly segmentation")
    isub = icas.add_subparsers(dest="icas_command", required=True)
    for name, add_args, run, text in (
            ("train", _train_args, cmd_icas_train, "General-to-Specific training, one stage"),
            ("segment", _segment_args, cmd_icas_segment, "segment images from prompts"),
            ("evaluate", _evaluate_args, cmd_icas_evaluate, "mIoU / FB-IoU / AUROC vs baselines"),
            ("export", _export_args, cmd_icas_export, "decoder -> ONNX with a parity check")):
        p = isub.add_parser(name, help=text)
        add_args(p)
        p.set_defaults(func=run)


def cmd_icas_segment(args: argparse.Namespace) -> dict:
    import cv2
    import numpy as np

    from pasta_ros.core.errors import PastaError
    from pasta_ros.core.icas.prompting import ICASPredictor, area_mask, negative_mask
    from pasta_ros.data.images import list_images, read_image

    pred = ICASPredictor.from_checkpoint(args.checkpoint, device=args.device,
                                         threshold=args.threshold)
    if args.normal:
        pred.set_normal_prompt([read_image(p) for p in list_images(args.normal)[:args.shots]])
    if args.points or args.boxes or args.prompt_mask:
        if not args.prompt_image:
            raise PastaError("--prompt-mask, --points and --boxes need --prompt-image")
        image = read_image(args.prompt_image)
        mask = (area_mask(image.shape[:2], args.points, args.boxes) if not args.prompt_mask
                else cv2.imread(str(args.prompt_mask), cv2.IMREAD_GRAYSCALE))
        if mask is None:
            raise PastaError(f"cannot read prompt mask {args.prompt_mask}")
        pred.set_prompt(pred.encode_anomaly_prompt(
            image, mask, negative_mask(image.shape[:2], args.negative_points)))
    elif args.negative_points:
        raise PastaError("--negative-points need --prompt-image with --points, --boxes or "
                         "--prompt-mask")
    args.out.mkdir(parents=True, exist_ok=True)
    scores = {}
    for path in list_images(args.images):
        res = pred.predict(read_image(path))
        cv2.imwrite(str(args.out / f"{path.stem}_score.png"),
                    (res.score * 255 + 0.5).astype(np.uint8))
        cv2.imwrite(str(args.out / f"{path.stem}_mask.png"), res.mask.astype(np.uint8) * 255)
        scores[path.stem] = round(res.image_score, 4)
    return {"mode": res.mode if scores else None, "out": str(args.out), "image_scores": scores}


def dataset_roots(paths: list[Path]) -> list[Path]:
    """Each path is a dataset root (has reference/) or a folder of such roots."""
    roots = []
    for p in paths:
        roots += [p] if (p / "reference").is_dir() else sorted(
            d for d in p.iterdir() if (d / "reference").is_dir())
    return roots


def cmd_icas_evaluate(args: argparse.Namespace) -> dict:
    from pasta_ros.core.errors import PastaError
    from pasta_ros.core.icas.model import load_icas_model
    from pasta_ros.evaluation_icas import evaluate
    from pasta_ros.evaluation_icas_fewshot import TTA_ANCHOR, FewShotOptions
    from pasta_ros.evaluation_icas_tta import TTAOptions

    roots = dataset_roots(args.data)
    if not roots:
        raise PastaError(f"no dataset (folder with reference/) under {args.data}")
    from pasta_ros.core.score_fusion import GAIN_MARGIN_Z

    margin = GAIN_MARGIN_Z if args.fusion_margin is None else args.fusion_margin
    opts = FewShotOptions(args.shot_augment, args.calib_defects, margin, args.dump_scores,
                          TTAOptions(args.tta_copies), args.calib_style,
                          TTA_ANCHOR if args.tta_fusion is None else args.tta_fusion == "anchor")
    model = load_icas_model(args.checkpoint)
    if args.input_size is not None:
        model.input_size = args.input_size
    res = evaluate(model, roots, args.seeds, tuple(args.shots),
                   args.threshold, progress=not getattr(args, "quiet", False), options=opts)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return res


def cmd_icas_export(args: argparse.Namespace) -> dict:
    from pasta_ros.core.icas.model import load_icas_model
    from pasta_ros.core.preprocess import network_size
    from pasta_ros.export.icas_decoder import export_decoder

    model = load_icas_model(args.checkpoint)
    w, h = network_size(*args.input_size, *args.input_size, model.stride)
    grid = (h // model.stride, w // model.stride)
    return export_decoder(model, args.out, grid, n_prompt=args.n_prompt,
                          n_ntp=args.n_ntp).to_json()
