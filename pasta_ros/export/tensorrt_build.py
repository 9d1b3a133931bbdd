"""TensorRT engines from ONNX files: naming, cache validation, optimisation profiles, builds.

An engine only runs on the TensorRT version and GPU (compute capability) it was built for,
with the precision and input size it was built at. Each engine is therefore named by all of
them and carries a JSON sidecar with the key and the sha256 of its ONNX file:

    <stem>-<W>x<H>-<precision>-trt<version>-sm<cc>-<gpu>.engine (+ .json)

:func:`resolve_engine` returns a valid cached engine as it is (never rebuilt silently), and
rebuilds with one log line saying why when the engine is missing, stale or built for another
machine, or raises :class:`EngineCacheError` saying why when rebuilding is disabled.
Everything but :func:`build_engine_python`, :func:`build_engine_trtexec` and
:func:`current_key` is pure and tested without a GPU; ``tensorrt`` is imported lazily.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pasta_ros.core.backends.profiles import Profile, Shape, select_profile
from pasta_ros.core.errors import PastaError

log = logging.getLogger("pasta.tensorrt")

PRECISIONS = ("fp32", "fp16")
DEFAULT_WORKSPACE_MB = 2048
__all__ = ["EngineCacheError", "EngineKey", "Profile", "select_profile", "resolve_engine",
           "engine_file_name", "check_engine", "batch_profiles", "range_profile",
           "trtexec_command", "make_builder", "current_key"]


class EngineCacheError(PastaError):
    """No usable engine and rebuilding is disabled, or a build failed; says why."""


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for. input_size is ``(W, H)``; compute_capability ``"8.7"``."""

    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_size: tuple[int, int]
    onnx_sha256: str = ""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> EngineKey:
        return cls(str(d["trt_version"]), str(d["gpu_name"]), str(d["compute_capability"]),
                   str(d["precision"]), (int(d["input_size"][0]), int(d["input_size"][1])),
                   str(d.get("onnx_sha256", "")))


def _slug(text: str) -> str:
    """Lower-case, ``[a-z0-9.]`` runs joined by ``_`` ("NVIDIA Jetson AGX Orin" ->
    "nvidia_jetson_agx_orin")."""
    return re.sub(r"[^a-z0-9.]+", "_", text.lower()).strip("_") or "unknown"


def engine_file_name(stem: str, key: EngineKey) -> str:
    """The cache file name for ``key`` (the ONNX hash lives in the sidecar, not the name)."""
    if key.precision not in PRECISIONS:
        raise EngineCacheError(f"precision {key.precision!r} is not one of "
                               f"{', '.join(PRECISIONS)}")
    w, h = key.input_size
    cc = key.compute_capability.replace(".", "")
    return (f"{_slug(stem)}-{w}x{h}-{key.precision}-trt{_slug(key.trt_version)}-sm{cc}-"
            f"{_slug(key.gpu_name)}.engine")


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def key_differences(want: EngineKey, have: EngineKey) -> list[str]:
    """Human-readable fields in which a cached engine's key differs from the wanted one."""
    out = []
    for f in dataclasses.fields(EngineKey):
        a, b = getattr(have, f.name), getattr(want, f.name)
        if a != b:
            shown = (a[:12], b[:12]) if f.name == "onnx_sha256" else (a, b)
            out.append(f"{f.name} {shown[0]} (engine) != {shown[1]} (now)")
    return out


def check_engine(engine: Path, want: EngineKey) -> tuple[bool, str]:
    """(valid, reason). Valid means: the engine file is non-empty and its sidecar holds
    exactly ``want``. The reason names what is missing or which fields differ."""
    if not engine.is_file():
        return False, f"no engine at {engine}"
    if engine.stat().st_size == 0:
        return False, f"{engine} is empty (an interrupted build?)"
    side = sidecar_path(engine)
    try:
        have = EngineKey.from_json(json.loads(side.read_text()))
    except FileNotFoundError:
        return False, f"{engine} has no sidecar {side.name}, so what it was built for is unknown"
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return False, f"{side} is unreadable ({exc})"
    diffs = key_differences(want, have)
    if diffs:
        return False, f"{engine.name} was built for another setup: {'; '.join(diffs)}"
    return True, "valid"


def stale_siblings(cache_dir: Path, stem: str, want: EngineKey) -> list[str]:
    """Why other engines of the same model and size in the cache do not fit (for the log):
    typically a TensorRT upgrade or a different GPU."""
    w, h = want.input_size
    out = []
    for side in sorted(cache_dir.glob(f"{_slug(stem)}-{w}x{h}-*.engine.json")):
        try:
            have = EngineKey.from_json(json.loads(side.read_text()))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
        diffs = key_differences(want, have)
        if diffs:
            out.append(f"{side.name[:-5]}: {'; '.join(diffs)}")
    return out


def write_sidecar(engine: Path, key: EngineKey) -> None:
    sidecar_path(engine).write_text(json.dumps(key.to_json(), indent=2))


def resolve_engine(onnx_path: str | Path, cache_dir: str | Path, stem: str, key: EngineKey,
                   builder: Callable[[Path, Path], None], *, rebuild: bool = True) -> Path:
    """The engine for ``key`` in ``cache_dir``: reused when valid; otherwise built with
    ``builder(onnx_path, engine_tmp_path)`` (logging why) or, with ``rebuild=False``, an
    EngineCacheError naming the mismatch. ``key.onnx_sha256`` is filled from the file."""
    onnx_path, cache = Path(onnx_path), Path(cache_dir)
    if not onnx_path.is_file():
        raise EngineCacheError(f"ONNX file not found: {onnx_path}; export it first "
                               "(pasta export --format onnx)")
    key = dataclasses.replace(key, onnx_sha256=file_sha256(onnx_path))
    engine = cache / engine_file_name(stem, key)
    valid, reason = check_engine(engine, key)
    if valid:
        log.info("TensorRT engine %s is valid for this machine; reusing it", engine)
        return engine
    stale = stale_siblings(cache, stem, key) if cache.is_dir() else []
    if stale:
        reason += "; cached engines that do not fit: " + " | ".join(stale)
    if not rebuild:
        raise EngineCacheError(f"no valid TensorRT engine and rebuilding is disabled: {reason}. "
                               "Build one with `pasta export --format tensorrt` on this machine "
                               "or allow rebuilding")
    log.warning("building TensorRT engine %s (%s); this takes minutes", engine.name, reason)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = engine.with_name(f"{engine.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    builder(onnx_path, tmp)
    tmp.replace(engine)
    write_sidecar(engine, key)  # written last: an engine without it is never trusted
    return engine


def batch_profiles(input_shape: Shape, batch_sizes: Sequence[int] = (1,)) -> list[Profile]:
    """One profile per requested batch size, ``(b, C, H, W)``, plus nothing else: a fixed-size
    engine runs fastest at exactly the shape it was tuned for. ``input_shape`` gives C, H, W."""
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise EngineCacheError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    rest = tuple(input_shape[1:])
    return [Profile((b, *rest), (b, *rest), (b, *rest)) for b in sorted(set(batch_sizes))]


def range_profile(input_shape: Shape, max_batch: int) -> Profile:
    """One profile covering batch 1..max_batch, tuned for ``input_shape[0]``."""
    if max_batch < 1 or input_shape[0] > max_batch:
        raise EngineCacheError(f"max batch {max_batch} must be >= 1 and >= the opt batch "
                               f"{input_shape[0]}")
    rest = tuple(input_shape[1:])
    return Profile((1, *rest), tuple(input_shape), (max_batch, *rest))


def trtexec_command(trtexec: str, onnx_path: Path, engine: Path, precision: str, *,
                    input_name: str = "image", profile: Profile | None = None,
                    workspace_mb: int = DEFAULT_WORKSPACE_MB) -> list[str]:
    """The trtexec command line for one engine (pure, for tests and for the README)."""
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine}",
           f"--memPoolSize=workspace:{workspace_mb}M", "--skipInference"]
    if precision == "fp16":
        cmd.append("--fp16")
    if profile is not None:
        def fmt(s: Shape) -> str:
            return f"{input_name}:{'x'.join(str(d) for d in s)}"
        cmd += [f"--minShapes={fmt(profile.min)}", f"--optShapes={fmt(profile.opt)}",
                f"--maxShapes={fmt(profile.max)}"]
    return cmd


def find_trtexec() -> str | None:
    """trtexec on PATH, or where the TensorRT / JetPack packages put it."""
    found = shutil.which("trtexec")
    if found:
        return found
    for p in ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec"):
        if Path(p).is_file():
            return p
    return None


def require_tensorrt():
    """The ``tensorrt`` module, or an EngineCacheError saying it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineCacheError("tensorrt requested but the tensorrt module is not installed "
                               "(pip install tensorrt, or JetPack's python3-libnvinfer on a "
                               "Jetson); use backend onnxruntime or torch instead") from exc
    return tensorrt


def current_key(precision: str, input_size: tuple[int, int], device: int = 0) -> EngineKey:
    """The key of an engine built here and now (needs tensorrt and a CUDA GPU)."""
    import torch

    trt = require_tensorrt()
    if not torch.cuda.is_available():
        raise EngineCacheError("tensorrt requested but torch sees no CUDA GPU")
    major, minor = torch.cuda.get_device_capability(device)
    return EngineKey(trt.__version__, torch.cuda.get_device_name(device), f"{major}.{minor}",
                     precision, tuple(input_size))


def build_engine_python(onnx_path: Path, engine: Path, precision: str, *,
                        profiles: Sequence[Profile] = (),
                        workspace_mb: int = DEFAULT_WORKSPACE_MB) -> None:  # pragma: no cover
    """Parse ``onnx_path`` and serialise an engine to ``engine`` with the TensorRT Python
    API (10.x; 11.x for fp32). Dynamic inputs get ``profiles`` (one profile object per
    entry); fp16 lets TensorRT 10 pick half-precision kernels per layer (weak typing)."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))  # TRT 10: implicit
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineCacheError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors[:5])}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 11: strongly typed networks only
            raise EngineCacheError(
                f"TensorRT {trt.__version__} has no fp16 builder flag: it builds fp16 only from "
                "an ONNX graph whose tensors are fp16 (convert the fp32 file with ModelOpt "
                "AutoCast: python -m modelopt.onnx.autocast --onnx_path FILE), or use "
                "--precision fp32")
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast fp16; the fp16 engine may be no faster")
        config.set_flag(trt.BuilderFlag.FP16)
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if -1 in tuple(network.get_input(i).shape)]
    if dynamic and not profiles:
        raise EngineCacheError(f"{onnx_path} has dynamic inputs "
                               f"{[t.name for t in dynamic]}; give optimisation profiles")
    for prof in profiles if dynamic else ():
        p = builder.create_optimization_profile()
        for t in dynamic:
            p.set_shape(t.name, prof.min, prof.opt, prof.max)
        config.add_optimization_profile(p)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise EngineCacheError(f"TensorRT failed to build an engine from {onnx_path}; run with "
                               "trtexec --verbose for the reason")
    engine.write_bytes(bytes(blob))


def build_engine_trtexec(onnx_path: Path, engine: Path, precision: str, *, trtexec: str,
                         profile: Profile | None = None,
                         workspace_mb: int = DEFAULT_WORKSPACE_MB) -> None:  # pragma: no cover
    """Build with the trtexec binary (same result; its log is kept on failure)."""
    cmd = trtexec_command(trtexec, onnx_path, engine, precision, profile=profile,
                          workspace_mb=workspace_mb)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not engine.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise EngineCacheError(f"trtexec failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def make_builder(precision: str, *, profiles: Sequence[Profile] = (), use_trtexec: bool = True,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB) -> Callable[[Path, Path], None]:
    """``builder(onnx, engine)`` for :func:`resolve_engine`: trtexec when present and asked
    for (single profile only), else the Python API."""
    trtexec = find_trtexec() if use_trtexec and len(profiles) <= 1 else None
    if trtexec and precision == "fp16" and \
            int(require_tensorrt().__version__.split(".")[0]) >= 11:
        trtexec = None  # trtexec 11 has no --fp16; the Python path explains what to do

    def build(onnx_path: Path, engine: Path) -> None:
        if trtexec:
            build_engine_trtexec(onnx_path, engine, precision, trtexec=trtexec,
                                 profile=profiles[0] if profiles else None,
                                 workspace_mb=workspace_mb)
        else:
            build_engine_python(onnx_path, engine, precision, profiles=profiles,
                                workspace_mb=workspace_mb)

    return build
