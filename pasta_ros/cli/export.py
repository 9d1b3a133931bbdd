"""`pasta export`: registry backbones, a model's fused graph and SAM 3 to ONNX, and (on a
machine with TensorRT and a GPU) to cached TensorRT engines.

    pasta export --backbone efficientnet_lite0 --input-size 910x512 --out models/engines
    pasta export --model models/steel --format tensorrt --precision fp16 --out models/engines
    pasta export --sam3 /data/sam3 --prompt "objects on the conveyor belt" --out models/engines

Every ONNX file is checked with onnx.checker and compared with torch; the figures are printed
and written to ``<out>/export_report.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pasta_ros.cli.args import parse_size
from pasta_ros.core.errors import PastaError

log = logging.getLogger("pasta.export")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command to the ``pasta`` parser."""
    from pasta_ros.core.config import BACKBONE_CHOICES

    x = sub.add_parser("export", help="export backbones, a model's fused graph and SAM 3 to "
                                      "ONNX / TensorRT engines")
    x.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    x.add_argument("--precision", choices=("fp32", "fp16"), default="fp16",
                   help="TensorRT engine precision (ONNX files are always fp32)")
    x.add_argument("--input-size", type=parse_size, help="camera / max network input WxH "
                   "(default: the model's, else 910x512); sides are rounded to the stride")
    x.add_argument("--out", type=Path, required=True, help="folder for .onnx / .engine files")
    x.add_argument("--backbone", action="append", help=f"one of {', '.join(BACKBONE_CHOICES)}"
                   " or 'all' (repeatable)")
    x.add_argument("--weights", default="", help="local checkpoint for --backbone")
    x.add_argument("--tiny", action="store_true", help="tiny random models (smoke tests)")
    x.add_argument("--model", type=Path, help="calibrated model: export its backbone and the "
                   "fused pixels -> cluster-map graph with its centres")
    x.add_argument("--sam3", type=Path, help="SAM 3 checkpoint folder (HF snapshot)")
    x.add_argument("--sam3-tiny", action="store_true", help="a tiny random SAM 3 instead")
    x.add_argument("--prompt", default="objects on the conveyor belt", help="SAM 3 prompt")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--no-rebuild", action="store_true", help="tensorrt: fail instead of "
                   "rebuilding a missing or stale engine")
    x.set_defaults(func=cmd_export)


def _onnx_targets(args: argparse.Namespace) -> list[dict]:
    """Export the requested backbones / fused graph / SAM 3 parts; one report dict each."""
    from pasta_ros.core.config import BACKBONE_CHOICES
    from pasta_ros.export.onnx_export import export_backbone

    reports: list[dict] = []
    names = list(args.backbone or [])
    if "all" in names:
        names = [n for n in names if n != "all"] + list(BACKBONE_CHOICES)
    size = args.input_size or (910, 512)
    if args.model:
        reports += _model_targets(args)
    for name in dict.fromkeys(names):
        r = export_backbone(name, args.out, size, weights=args.weights, tiny=args.tiny,
                            opset=args.opset)
        reports.append({"kind": "backbone", "name": name, **r.to_json()})
    if args.sam3 or args.sam3_tiny:
        reports += _sam3_targets(args)
    if not reports:
        raise PastaError("nothing to export: give --backbone NAME, --model DIR or --sam3 DIR")
    return reports


def _model_targets(args: argparse.Namespace) -> list[dict]:
    """A calibrated model's backbone graph and fused graph, named and cached exactly as the
    pipeline looks for them (``--out`` should be ``<model>/engines`` or the node's
    ``engine_dir``); for --format tensorrt the engines are built here too."""
    from pasta_ros.core.backbones import build_backbone, weights_fingerprint
    from pasta_ros.core.model_io import load_model
    from pasta_ros.core.preprocess import network_size
    from pasta_ros.export.runtime import ExportedBackbone, ExportedClusterMap, RuntimeOptions

    model = load_model(args.model)
    cam = args.input_size or tuple(model.input_size)
    trt = args.format == "tensorrt"
    opts = RuntimeOptions("tensorrt" if trt else "onnxruntime", Path(args.out),
                          "cuda" if trt else "cpu", args.precision, not args.no_rebuild)
    backbone = build_backbone(model.backbone, args.weights)
    size = network_size(cam[0], cam[1], model.input_size[0], model.input_size[1],
                        backbone.info.stride)
    features = ExportedBackbone(backbone, opts, weights_fingerprint(model.backbone, args.weights))
    features.prepare(size)
    fused = ExportedClusterMap(model, backbone, opts)
    fused.prepare(size)
    return [{"kind": "backbone", "name": model.backbone, **features.artifacts[size]},
            {"kind": "fused", "name": model.model_id, **fused.artifacts[size]}]


def _sam3_targets(args: argparse.Namespace) -> list[dict]:
    from pasta_ros.export.sam3_export import export_sam3

    if args.sam3_tiny:
        from pasta_ros.core.segmenters.sam3_tiny import tiny_model, tiny_tokenizer

        model, tok = tiny_model(), tiny_tokenizer()
    else:
        from pasta_ros.core.segmenters.sam3 import Sam3Segmenter

        seg = Sam3Segmenter.from_pretrained(args.sam3, args.prompt)
        model, tok = seg.model, seg.tokenizer
    reports = export_sam3(model, tok, args.prompt, Path(args.out) / "sam3", opset=args.opset)
    return [{"kind": "sam3", "name": Path(r.path).stem, **r.to_json()} for r in reports]


def _engines(args: argparse.Namespace, reports: list[dict]) -> list[dict]:
    """Build or reuse a TensorRT engine for each exported ONNX file."""
    from pasta_ros.export import tensorrt_build as tb

    out = []
    for r in reports:
        if "artifact" in r:  # built with the model's graphs already
            out.append({"onnx": r["path"], "engine": r["artifact"]})
            continue
        onnx = Path(r["path"])
        w, h = r["input_size"]
        key = tb.current_key(args.precision, (w, h))
        stem = onnx.stem.removesuffix(f"-{w}x{h}")  # the engine name adds the size itself
        engine = tb.resolve_engine(onnx, Path(r["path"]).parent, stem, key,
                                   tb.make_builder(args.precision),
                                   rebuild=not args.no_rebuild)
        out.append({"onnx": str(onnx), "engine": str(engine), **key.to_json()})
    return out


def cmd_export(args: argparse.Namespace) -> dict:
    """Body of ``pasta export``: ONNX files (always), then engines for --format tensorrt."""
    if args.format == "tensorrt":  # fail before minutes of export when TensorRT cannot run
        from pasta_ros.core.backends import check_backend

        check_backend("tensorrt", "cuda")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    reports = _onnx_targets(args)
    for r in reports:
        for p in r.get("parity", ()):  # absent when a cached file was reused
            from pasta_ros.export.onnx_export import Parity

            print(f"{Path(r['path']).name}: {Parity(**p).line()}")
    result: dict = {"format": args.format, "onnx": reports}
    if args.format == "tensorrt":
        result["engines"] = _engines(args, reports)
    (Path(args.out) / "export_report.json").write_text(json.dumps(result, indent=2))
    return result
