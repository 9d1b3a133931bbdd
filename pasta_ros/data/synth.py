"""Seeded synthetic datasets in the PASTA layout (baseline / reference / empty / test).

Two presets mirror the paper's domains: ``steel`` (steel scrap = target, copper/brass =
anomaly, on a conveyor belt) and ``plants`` (crop = target, weeds = anomaly, on soil). Scenes
are composited from real skimage textures; masks are exact (a pixel belongs to the topmost
object covering at least half of it) and edges in the image are anti-aliased.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pasta_ros.data import synth_conveyor as conv
from pasta_ros.data.layout import DatasetLayout, write_labels_csv, write_mask
from pasta_ros.data.synth_plants import plant_object, soil_background
from pasta_ros.data.synth_shapes import blend, clip_box
from pasta_ros.data.synth_steel import belt_background, metal_object
from pasta_ros.data.synth_textures import illumination

SYNTH_VERSION = "2"  # 2: test/instances, conveyor presets
_SETS = ("baseline", "reference", "empty", "test")

Background = Callable[[np.random.Generator, int, int], np.ndarray]
ObjectRenderer = Callable[[np.random.Generator, int, float], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PresetParams:
    """Scene statistics of a preset. Pixel sizes are for a 512 px short image side."""

    name: str
    n_objects: tuple[int, int] = (4, 14)
    extent_px: tuple[float, float] = (30.0, 140.0)
    anomaly_share: float = 0.3  # mean share of anomalies among baseline objects
    p_no_anomaly: float = 0.2  # share of baseline images without any anomaly
    test_anomalous: float = 0.5  # share of test images with anomalies
    max_overlap: float = 0.1  # placement retries until an object is this little occluded
    shadow_strength: tuple[float, float] = (0.35, 0.6)
    shadow_offset_px: tuple[float, float] = (3.0, 8.0)
    shadow_blur_px: float = 3.0
    noise_std: float = 2.0


PRESETS: dict[str, PresetParams] = {
    "steel": PresetParams("steel"),
    "plants": PresetParams("plants", extent_px=(36.0, 150.0), shadow_strength=(0.25, 0.45),
                           shadow_offset_px=(2.0, 6.0)),
    **{name: PresetParams(name, n_objects=(7, 16), max_overlap=0.02)
       for name in conv.CONVEYOR_PRESETS},
}
_RENDERERS: dict[str, tuple[Background, ObjectRenderer]] = {
    "steel": (belt_background, metal_object),
    "plants": (soil_background, plant_object),
}


def get_preset(name: str) -> PresetParams:
    """The :class:`PresetParams` of ``name``; ValueError listing the presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def render_scene(
    preset: str, rng: np.random.Generator, width: int, height: int, n_targets: int,
    n_anomalies: int, options: conv.ConveyorOptions | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scene with ``n_targets`` targets and ``n_anomalies`` anomalies.

    Objects are drawn in random order; later ones occlude earlier ones.

    Returns:
        ``rgb`` ``(H, W, 3) uint8``; ``labels`` ``(H, W) uint8`` (0 background, 1 target,
        2 anomaly); ``instances`` ``(H, W) int32`` (0 none, k for the k-th object drawn; an
        object hidden entirely by later ones leaves no pixels).
    """
    params = get_preset(preset)
    if preset in conv.CONVEYOR_PRESETS:
        return render_conveyor(params, options or conv.conveyor_options(preset), rng, width,
                               height, n_targets, n_anomalies)
    background, render_object = _RENDERERS[preset]
    img = background(rng, height, width)
    labels, instances, (scale, shift, strength) = _empty_scene(rng, params, width, height)
    lo, hi = np.log(params.extent_px)
    order = rng.permutation(np.array([1] * n_targets + [2] * n_anomalies, dtype=np.uint8))
    for k, label in enumerate(order, start=1):
        extent = float(np.exp(rng.uniform(lo, hi)) * scale)
        rgb, cov = render_object(rng, int(label), extent)
        mask = cov >= 0.5
        x0, y0 = _place(rng, mask, instances > 0, params.max_overlap)
        _paste(img, labels, instances, rgb, cov, (x0, y0), int(label), k, shift, strength,
               params.shadow_blur_px * scale)
    img += params.noise_std * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels, instances


def _paste(img: np.ndarray, labels: np.ndarray, instances: np.ndarray, rgb: np.ndarray,
           cov: np.ndarray, at: tuple[int, int], label: int, k: int, shift: tuple[int, int],
           strength: float, blur: float) -> None:
    """Paste one object in place: its shadow, its pixels blended by coverage ``cov`` at
    top-left ``at`` = (x, y), and its exact mask (coverage >= 0.5) into ``labels`` (class) and
    ``instances`` (id ``k``); the parts outside the frame are clipped."""
    x0, y0 = at
    mask = cov >= 0.5
    _shadow(img, cov, x0 + shift[0], y0 + shift[1], strength, blur)
    blend(img, rgb, cov, x0, y0)
    box = clip_box(labels.shape, x0, y0, *mask.shape)
    if box is not None:
        (iy, ix), (py, px) = box
        labels[iy, ix][mask[py, px]] = label
        instances[iy, ix][mask[py, px]] = k


def _empty_scene(rng: np.random.Generator, params: PresetParams, width: int, height: int,
                 ) -> tuple[np.ndarray, np.ndarray, tuple[float, tuple[int, int], float]]:
    """Empty ``(H, W) uint8`` labels and ``int32`` instance ids, and the scene's lighting:
    (object scale, shadow shift (dx, dy) px, shadow strength), drawn from ``rng`` in a fixed
    order so that a seed always gives the same scene."""
    labels = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.int32)
    scale = min(width, height) / 512
    light = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(*params.shadow_offset_px) * scale
    shift = (int(round(offset * np.cos(light))), int(round(offset * np.sin(light))))
    return labels, instances, (scale, shift, rng.uniform(*params.shadow_strength))


def render_conveyor(params: PresetParams, opts: conv.ConveyorOptions, rng: np.random.Generator,
                    width: int, height: int, n_targets: int, n_anomalies: int,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`render_scene` for the conveyor presets (:mod:`synth_conveyor`): same outputs."""
    img = conv.belt(rng, height, width, opts.look)
    labels, instances, (scale, shift, strength) = _empty_scene(rng, params, width, height)
    lo, hi = np.log(params.extent_px)
    n = n_targets + n_anomalies
    n_shown = max(int(round(n / opts.scale ** 2)), 1) if n else 0  # high camera: more objects
    pool = np.array([1] * n_targets + [2] * n_anomalies, dtype=np.uint8)
    order = rng.permutation(pool)[:n_shown] if n_shown <= n else \
        rng.permutation(np.resize(rng.permutation(pool), n_shown))
    for k, label in enumerate(order, start=1):
        extent = float(np.exp(rng.uniform(lo, hi)) * scale * opts.scale)
        cov = conv.object_coverage(rng, extent, rng.random() < opts.thin, scale * opts.scale)
        rgb = conv.shade_object(rng, cov, int(label))
        mask = cov >= 0.5
        spot = conv.place_touching(rng, mask, instances) if rng.random() < opts.touch else None
        x0, y0 = spot if spot is not None else _place(rng, mask, instances > 0,
                                                       params.max_overlap)
        _paste(img, labels, instances, rgb, cov, (x0, y0), int(label), k, shift, strength,
               params.shadow_blur_px * scale)
    if opts.gradient:
        img *= illumination(rng, height, width, gradient=rng.uniform(0.3, 0.6),
                            vignette=rng.uniform(0.1, 0.3))[:, :, None]
    if opts.blur:
        img = conv.motion_blur(img, rng, scale)
    img += params.noise_std * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels, instances


def _place(rng: np.random.Generator, mask: np.ndarray, occupied: np.ndarray,
           max_overlap: float, tries: int = 15) -> tuple[int, int]:
    """Top-left corner for ``mask`` with the object centre inside the image, least overlap."""
    h, w = occupied.shape
    s = mask.shape[0]
    area = max(int(mask.sum()), 1)
    best, best_overlap = (0, 0), np.inf
    for _ in range(tries):
        cx, cy = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(0.05 * h, 0.95 * h)
        x0, y0 = int(cx - s / 2), int(cy - s / 2)
        box = clip_box(occupied.shape, x0, y0, s, s)
        overlap = 0.0
        if box is not None:
            (iy, ix), (py, px) = box
            overlap = np.count_nonzero(occupied[iy, ix] & mask[py, px]) / area
        if overlap < best_overlap:
            best, best_overlap = (x0, y0), overlap
        if overlap <= max_overlap:
            break
    return best


def _shadow(img: np.ndarray, cov: np.ndarray, x0: int, y0: int, strength: float,
            blur: float) -> None:
    """Darken ``img`` under a blurred, shifted copy of the object's coverage (a drop shadow)."""
    pad = int(np.ceil(3 * blur)) + 1
    soft = cv2.GaussianBlur(np.pad(cov, pad), (0, 0), blur)
    box = clip_box(img.shape, x0 - pad, y0 - pad, *soft.shape)
    if box is None:
        return
    (iy, ix), (py, px) = box
    img[iy, ix] *= (1.0 - strength * soft[py, px])[:, :, None]


# --------------------------------------------------------------------------- datasets


def _counts(set_name: str, rng: np.random.Generator, p: PresetParams, anomalous: bool
            ) -> tuple[int, int]:
    """(n_targets, n_anomalies) for one image of ``set_name``."""
    n = int(rng.integers(p.n_objects[0], p.n_objects[1] + 1))
    if set_name == "empty":
        return 0, 0
    if set_name == "reference" or (set_name == "test" and not anomalous):
        return n, 0
    if set_name == "test":
        a = min(n, max(1, int(rng.binomial(n, rng.uniform(0.15, 0.6)))))
        return n - a, a
    if rng.random() < p.p_no_anomaly:
        return n, 0
    # share ~ U(0, 2m) so that the mean over all baseline images is p.anomaly_share
    m = p.anomaly_share / (1.0 - p.p_no_anomaly)
    a = int(rng.binomial(n, min(rng.uniform(0, 2 * m), 1.0)))
    return n - a, a


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _prepare(out: Path, overwrite: bool) -> None:
    existing = [out / n for n in (*_SETS, "meta.json") if (out / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({', '.join(p.name for p in existing)}); "
            "pass overwrite=True to replace it"
        )
    for p in existing:  # only the parts this generator writes, never other files
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _check_args(preset: str, seed: int, width: int, height: int, counts: dict[str, int]) -> None:
    get_preset(preset)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if width < 64 or height < 64:
        raise ValueError(f"width and height must be >= 64, got {width}x{height}")
    for name, n in counts.items():
        if n < (1 if name in ("baseline", "reference") else 0):
            raise ValueError(f"n_{name} must be >= {int(name in ('baseline', 'reference'))}, "
                             f"got {n}")


def generate(
    preset: str, out: str | Path, *, seed: int = 0, width: int = 910, height: int = 512,
    n_baseline: int = 80, n_reference: int = 40, n_empty: int = 12, n_test: int = 30,
    overwrite: bool = False, progress: bool = False, touch: float | None = None,
    thin: float | None = None, scale: float | None = None, look: str | None = None,
    gradient: bool | None = None, blur: bool | None = None,
) -> DatasetLayout:
    """Write a synthetic dataset to ``out`` and return its :class:`DatasetLayout`.

    Sets (PNG, ``(H, W, 3)`` RGB): ``baseline/`` mixed images (about ``anomaly_share`` of
    objects are anomalies, some images have none), ``reference/`` targets only, ``empty/``
    background only, ``test/images`` with ``test/masks`` ({0, 1, 2} uint8) and
    ``test/labels.csv`` (1 when the mask has any anomaly pixel; about half the images) and
    ``test/instances`` (``(H, W) uint16`` PNG, 0 none, one id per pasted object).
    ``touch``/``thin``/``scale``/``look``/``gradient``/``blur`` override a conveyor preset's
    options (:class:`synth_conveyor.ConveyorOptions`); other presets refuse them.
    ``meta.json`` records preset, seed, sizes, counts and the generator version.
    Each image has its own seeded generator, so the output is identical for a seed.

    Raises:
        ValueError: unknown preset or bad sizes/counts. FileExistsError: ``out`` holds a
        dataset and ``overwrite`` is False.
    """
    counts = {"baseline": n_baseline, "reference": n_reference, "empty": n_empty,
              "test": n_test}
    _check_args(preset, seed, width, height, counts)
    params, out = get_preset(preset), Path(out)
    overrides = dict(touch=touch, thin=thin, scale=scale, look=look, gradient=gradient,
                     blur=blur)
    opts = None
    if preset in conv.CONVEYOR_PRESETS:
        opts = conv.conveyor_options(preset, **overrides)
    elif any(v is not None for v in overrides.values()):
        raise ValueError(f"touch/thin/scale/look/gradient/blur apply to the conveyor presets "
                         f"({', '.join(conv.CONVEYOR_PRESETS)}), not to {preset!r}")
    _prepare(out, overwrite)
    touching = [0, 0]
    # conveyor presets draw their own scenes (dev and held-out presets must not share
    # layouts); steel and plants keep their issue-2 streams
    salt = [zlib.crc32(preset.encode())] if opts is not None else []
    plan = np.random.default_rng([seed, len(_SETS)])
    anomalous = plan.permutation(np.arange(n_test) < round(n_test * params.test_anomalous))
    bar = tqdm(total=sum(counts.values()), desc=f"synth {preset}", unit="img",
               disable=not progress)
    labels: dict[str, int] = {}
    for set_id, name in enumerate(_SETS):
        folder = out / name / "images" if name == "test" else out / name
        if counts[name]:
            folder.mkdir(parents=True)
        if name == "test" and n_test:
            (out / "test" / "masks").mkdir()
            (out / "test" / "instances").mkdir()
        for i in range(counts[name]):
            rng = np.random.default_rng([seed, set_id, i, *salt])
            nt, na = _counts(name, rng, params, name == "test" and bool(anomalous[i]))
            rgb, lab, inst = render_scene(preset, rng, width, height, nt, na, opts)
            stem = f"{i:05d}"
            _write_rgb(folder / f"{stem}.png", rgb)
            if name == "test":
                write_mask(out / "test" / "masks" / f"{stem}.png", lab)
                write_instances(out / "test" / "instances" / f"{stem}.png", inst)
                touching = [a + b for a, b in zip(touching, conv.touching_share(inst))]
                labels[stem] = int((lab == 2).any())
            bar.update()
    bar.close()
    if n_test:
        write_labels_csv(out / "test" / "labels.csv", labels)
    extra = {"touching_objects_test": touching[0], "objects_test": touching[1]}
    if opts is not None:
        extra["options"] = asdict(opts)
    _write_meta(out, params, seed, width, height, counts, labels, extra)
    return DatasetLayout.discover(out)


def write_instances(path: Path, instances: np.ndarray) -> None:
    """Write an ``(H, W)`` instance-id image as a single-channel uint16 PNG."""
    if not cv2.imwrite(str(path), instances.astype(np.uint16)):
        raise OSError(f"could not write {path}")


def _write_meta(out: Path, params: PresetParams, seed: int, width: int, height: int,
                counts: dict[str, int], labels: dict[str, int], extra: dict) -> None:
    meta = {
        "generator": "pasta_ros.data.synth",
        "version": SYNTH_VERSION,
        "preset": params.name,
        "seed": seed,
        "width": width,
        "height": height,
        "counts": counts,
        "test_anomalous": int(sum(labels.values())),
        "params": asdict(params),
        **extra,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
