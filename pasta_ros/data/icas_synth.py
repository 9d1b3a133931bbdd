"""Training and benchmark data for iCAS, all procedural over real scikit-image photographs.

COCO/ADE20K (generic stage) and RealIAD/MANTA (anomaly stage) are unreachable offline, so:

* generic stage: multi-object scenes (``synth_shapes`` shapes with real-texture surfaces on
  real-texture backgrounds) plus copy-paste of objects from a second scene; one object class is
  the prompt, the other classes and the background are non-target segments.
* anomaly stage: a real texture surface with synthetic defects of one kind (scratch, spot,
  crack, missing piece, contamination) drawn in one per-category style.

Reference/target pairs are two augmentations of one image (§3.1), or, half the time, a second
image of the same texture and defect style (closer to the evaluation protocol, where the prompt
is another sample of the category). Textures are split: ``TRAIN_TEXTURES`` for training,
``HELDOUT_TEXTURES`` only for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import skimage.data

from pasta_ros.data.synth_shapes import SHAPES, shape_coverage

TRAIN_TEXTURES = ("brick", "grass", "gravel", "moon", "camera", "astronaut", "coffee",
                  "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "text")
HELDOUT_TEXTURES = ("retina", "cell", "coins", "clock")
DEFECTS = ("scratch", "spot", "crack", "missing", "contamination")


@cache
def _source(name: str) -> np.ndarray:
    """``(H, W, 3) float32`` RGB in [0, 1] of a skimage photo (gray ones replicated)."""
    img = getattr(skimage.data, name)()
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(img.max(), 1))
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if name == "retina":  # keep the fundus, not the black frame around it
        img = img[350:1060, 350:1060]
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


def texture_view(rng: np.random.Generator, name: str, h: int, w: int,
                 zoom: tuple[float, float] = (0.6, 1.6)) -> np.ndarray:
    """A rotated, scaled, mirrored-at-the-border ``(h, w, 3) float32`` view of a photo; gray
    sources are tinted with a random colour so surfaces differ in hue too."""
    src = _source(name)
    z, theta = rng.uniform(*zoom), rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta) / z, np.sin(theta) / z
    cx, cy = rng.uniform(0, src.shape[1]), rng.uniform(0, src.shape[0])
    m = np.array([[c, -s, cx - c * w / 2 + s * h / 2], [s, c, cy - s * w / 2 - c * h / 2]])
    out = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT_101)
    if np.ptp(src[..., 0] - src[..., 1]) < 1e-3:  # gray photo
        out = out * rng.uniform(0.4, 1.2, 3).astype(np.float32)
    return np.clip(out, 0, 1)


# ----------------------------------------------------------------------------- generic stage


def _paste(rng: np.random.Generator, img: np.ndarray, labels: np.ndarray, cov: np.ndarray,
           surface: np.ndarray, label: int) -> None:
    """Composite one shape ``cov (S, S)`` with ``surface`` colours at a random place."""
    h, w = labels.shape
    s = cov.shape[0]
    x0, y0 = int(rng.integers(-s // 4, w - 3 * s // 4)), int(rng.integers(-s // 4, h - 3 * s // 4))
    ax, ay, bx, by = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if ax >= bx or ay >= by:
        return
    a = cov[ay - y0:by - y0, ax - x0:bx - x0, None]
    img[ay:by, ax:bx] = img[ay:by, ax:bx] * (1 - a) + surface[ay:by, ax:bx] * a
    labels[ay:by, ax:bx][a[..., 0] >= 0.5] = label


def generic_scene(rng: np.random.Generator, size: int, textures: tuple[str, ...] = TRAIN_TEXTURES
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A multi-object scene: ``(size, size, 3) float32`` RGB and ``(size, size) int32`` class
    labels (0 background, 1..n object classes; instances of a class share shape and surface)."""
    img = texture_view(rng, str(rng.choice(textures)), size, size)
    labels = np.zeros((size, size), np.int32)
    for cls in range(1, int(rng.integers(2, 5)) + 1):
        kind = str(rng.choice(list(SHAPES)))
        surface = texture_view(rng, str(rng.choice(textures)), size, size)
        surface = np.clip(surface * rng.uniform(0.5, 1.5, 3), 0, 1).astype(np.float32)
        extent = size * rng.uniform(0.12, 0.4)
        for _ in range(int(rng.integers(1, 4))):
            cov = shape_coverage(kind, rng, extent * rng.uniform(0.8, 1.2))
            _paste(rng, img, labels, cov, surface, cls)
    return img, labels


def copy_paste(rng: np.random.Generator, img: np.ndarray, labels: np.ndarray,
               src: np.ndarray, src_labels: np.ndarray) -> None:
    """Copy-paste augmentation (Ghiasi et al. 2021): paste a random subset of the object
    classes of ``src`` onto ``img`` in place, as new classes on top."""
    ids = [c for c in np.unique(src_labels) if c > 0]
    next_id = int(labels.max()) + 1
    for c in ids:
        if rng.random() < 0.5:
            m = src_labels == c
            img[m] = src[m]
            labels[m] = next_id
            next_id += 1


# ----------------------------------------------------------------------------- defects


@dataclass(frozen=True)
class DefectStyle:
    """What one defect category looks like: kind, colour (RGB multiplier or fill), size
    scale, and (contamination) the foreign texture."""

    kind: str
    color: tuple[float, float, float]
    dark: bool
    scale: float
    foreign: str


def sample_style(rng: np.random.Generator, kind: str, textures: tuple[str, ...]) -> DefectStyle:
    return DefectStyle(kind, tuple(float(v) for v in rng.uniform(0, 1, 3)), bool(rng.random()
                       < 0.6), float(rng.uniform(0.7, 1.4)), str(rng.choice(textures)))


def _polyline(rng: np.random.Generator, size: int, n: int, step: float, wander: float
              ) -> np.ndarray:
    p = rng.uniform(0.15, 0.85, 2) * size
    ang = rng.uniform(0, 2 * np.pi)
    pts = [p.copy()]
    for _ in range(n):
        ang += rng.normal(0, wander)
        p = p + step * np.array([np.cos(ang), np.sin(ang)])
        pts.append(p.copy())
    return np.asarray(pts)


def defect_coverage(rng: np.random.Generator, style: DefectStyle, size: int) -> np.ndarray:
    """``(size, size) float32`` coverage in [0, 1] of one defect instance (4x supersampled)."""
    ss, sc = 4, style.scale * size / 224
    hi = np.zeros((size * ss, size * ss), np.uint8)
    if style.kind in ("scratch", "crack"):
        crack = style.kind == "crack"
        pts = _polyline(rng, size, int(rng.integers(4, 9)), sc * rng.uniform(8, 16),
                        0.9 if crack else 0.12)
        thick = max(1, int(round(ss * sc * rng.uniform(2.0, 4.0 if crack else 3.5))))
        cv2.polylines(hi, [np.round(pts * ss).astype(np.int32)], False, 255, thick)
        if crack and rng.random() < 0.7:  # a branch
            b = pts[len(pts) // 2] + np.cumsum(rng.normal(0, sc * 6, (4, 2)), 0)
            cv2.polylines(hi, [np.round(b * ss).astype(np.int32)], False, 255, thick)
    else:
        extent = sc * {"spot": rng.uniform(8, 18), "missing": rng.uniform(18, 36),
                       "contamination": rng.uniform(16, 34)}[style.kind]
        cov = shape_coverage("blob" if style.kind != "missing" else "scrap", rng, extent)
        s = cov.shape[0]
        x0, y0 = (int(v) for v in rng.uniform(0.1, 0.9, 2) * size - s / 2)
        big = cv2.resize(cov, (s * ss, s * ss), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((size * ss + 2 * s * ss, size * ss + 2 * s * ss), np.float32)
        ox, oy = (x0 + s) * ss, (y0 + s) * ss
        canvas[oy:oy + s * ss, ox:ox + s * ss] = big
        hi = (canvas[s * ss:s * ss + size * ss, s * ss:s * ss + size * ss] * 255).astype(np.uint8)
    return cv2.resize(hi, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def apply_defect(rng: np.random.Generator, img: np.ndarray, cov: np.ndarray,
                 style: DefectStyle) -> None:
    """Composite one defect of ``style`` with coverage ``cov`` onto ``img`` in place."""
    h, w = cov.shape
    col = np.asarray(style.color, np.float32)
    if style.kind in ("scratch", "crack"):
        look = img * (0.25 if style.dark else 0.6) + (0.0 if style.dark else 0.45)
        if style.kind == "crack":
            look = img * 0.15
    elif style.kind == "spot":
        look = np.broadcast_to(col * (0.35 if style.dark else 1.0), img.shape)
    elif style.kind == "missing":
        shade = cv2.GaussianBlur(cov, (0, 0), 2.0)[..., None]
        look = np.broadcast_to(col * 0.15, img.shape) * (1 - 0.5 * shade)
    else:
        look = texture_view(rng, style.foreign, h, w) * (0.4 + col)
    a = cov[..., None]
    img[:] = np.clip(img * (1 - a) + look * a, 0, 1)


def defect_image(rng: np.random.Generator, texture: str, style: DefectStyle | None, size: int,
                 n_defects: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A texture surface with ``n_defects`` defects of ``style``: ``(size, size, 3) float32``
    RGB and ``(size, size) bool`` defect mask (coverage >= 0.5). ``n_defects=0``: normal."""
    img = texture_view(rng, texture, size, size, zoom=(0.8, 1.4))
    img *= cv2.resize(rng.uniform(0.85, 1.15, (3, 3)).astype(np.float32), (size, size))[..., None]
    mask = np.zeros((size, size), bool)
    for _ in range(n_defects):
        cov = defect_coverage(rng, style, size)
        apply_defect(rng, img, cov, style)
        mask |= cov >= 0.5
    return np.clip(img, 0, 1), mask


# ----------------------------------------------------------------------------- pairs


@dataclass
class Pair:
    """One training example.

    ref: ``(S, S, 3) uint8`` reference image I_r; ref_mask ``(S, S) float32`` prompt mask M_r
    (all zero for a normal prompt). target ``(S, S, 3) uint8``; segments ``(G, S, S) bool``;
    classes ``(G,) int64`` (0 prompted / unknown foreground, 1 non-target); semantic: the
    reference carries an anomaly/target prompt (False: normal prompting).
    """

    ref: np.ndarray
    ref_mask: np.ndarray
    target: np.ndarray
    segments: np.ndarray
    classes: np.ndarray
    semantic: bool


def augment(rng: np.random.Generator, img: np.ndarray, masks: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Same random flip / rot90 / resized crop on ``(S, S, 3) float32`` and ``(G, S, S) bool``;
    colour jitter on the image. Returns ``uint8`` image and ``bool`` masks."""
    s = img.shape[0]
    scale = rng.uniform(0.65, 1.0)
    c = int(round(s * scale))
    x0, y0 = (int(v) for v in rng.integers(0, s - c + 1, 2))
    img = cv2.resize(img[y0:y0 + c, x0:x0 + c], (s, s), interpolation=cv2.INTER_LINEAR)
    m = masks[:, y0:y0 + c, x0:x0 + c].astype(np.uint8).transpose(1, 2, 0)
    m = cv2.resize(m, (s, s), interpolation=cv2.INTER_NEAREST).reshape(s, s, -1)
    k, flip = int(rng.integers(4)), rng.random() < 0.5
    img, m = np.rot90(img, k), np.rot90(m, k)
    if flip:
        img, m = img[:, ::-1], m[:, ::-1]
    img = (img - 0.5) * rng.uniform(0.8, 1.2) + 0.5 * rng.uniform(0.85, 1.15)
    img = img * rng.uniform(0.92, 1.08, 3)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), np.ascontiguousarray(m.transpose(2, 0, 1)).astype(bool)


def generic_pair(rng: np.random.Generator, size: int,
                 textures: tuple[str, ...] = TRAIN_TEXTURES) -> Pair:
    """Generic stage: one object class of a scene is the prompt, everything else non-target."""
    min_area = (size // 16) ** 2
    while True:
        img, labels = generic_scene(rng, size, textures)
        if rng.random() < 0.5:
            copy_paste(rng, img, labels, *generic_scene(rng, size, textures))
        ids = np.unique(labels)
        onehot = labels[None] == ids[:, None, None]
        objects = [i for i, c in enumerate(ids) if c > 0 and onehot[i].sum() >= min_area]
        if not objects:
            continue
        pick = int(rng.choice(objects))
        ref, ref_m = augment(rng, img, onehot)
        tgt, tgt_m = augment(rng, img, onehot)
        if ref_m[pick].sum() < min_area // 2 or tgt_m[pick].sum() < min_area // 2:
            continue
        keep = tgt_m.reshape(len(ids), -1).any(1)
        classes = np.where(np.arange(len(ids)) == pick, 0, 1)[keep]
        return Pair(ref, ref_m[pick].astype(np.float32), tgt, tgt_m[keep], classes, True)


def anomaly_pair(rng: np.random.Generator, size: int, normal_prob: float = 0.35,
                 textures: tuple[str, ...] = TRAIN_TEXTURES) -> Pair:
    """Anomaly stage: a defect prompt (or, with ``normal_prob``, a defect-free normal prompt)
    and a target of the same texture and defect style."""
    min_area = 12
    while True:
        texture = str(rng.choice(textures))
        style = sample_style(rng, str(rng.choice(DEFECTS)), textures)
        img, mask = defect_image(rng, texture, style, size, int(rng.integers(1, 4)))
        tgt, tgt_m = augment(rng, img, np.stack([mask, ~mask]))
        if tgt_m[0].sum() < min_area:
            continue
        segs, classes = tgt_m, np.array([0, 1])
        if rng.random() < normal_prob:
            normal, _ = defect_image(rng, texture, style, size, 0)
            ref, _ = augment(rng, normal, np.zeros((1, size, size), bool))
            return Pair(ref, np.zeros((size, size), np.float32), tgt, segs, classes, False)
        if rng.random() < 0.5:
            img, mask = defect_image(rng, texture, style, size, int(rng.integers(1, 3)))
        ref, ref_m = augment(rng, img, mask[None])
        if ref_m[0].sum() < min_area:
            continue
        return Pair(ref, ref_m[0].astype(np.float32), tgt, segs, classes, True)


def write_benchmark(root, texture: str, kind: str, *, seed: int, size: int = 224,
                    n_reference: int = 8, n_test: int = 12) -> None:
    """Write one defect category in the PASTA dataset layout under ``root``.

    reference/ holds ``n_reference`` defect-free images; baseline/ a copy of the test images;
    test/images + test/masks (0 background, 2 anomaly) + test/labels.csv with ``n_test``
    images, two thirds of them defective (1-3 defects of one style).
    """
    from pathlib import Path

    from pasta_ros.data.layout import write_labels_csv, write_mask

    rng = np.random.default_rng(seed)
    root = Path(root)
    for d in ("reference", "baseline", "test/images", "test/masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    style = sample_style(rng, kind, TRAIN_TEXTURES)
    to_u8 = lambda im: cv2.cvtColor(np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8),  # noqa
                                    cv2.COLOR_RGB2BGR)
    for i in range(n_reference):
        cv2.imwrite(str(root / f"reference/{i:03d}.png"), to_u8(defect_image(
            rng, texture, style, size)[0]))
    labels = {}
    for i in range(n_test):
        bad = i % 3 != 2
        img, mask = defect_image(rng, texture, style, size, int(rng.integers(1, 4)) if bad else 0)
        stem = f"{i:03d}"
        cv2.imwrite(str(root / f"test/images/{stem}.png"), to_u8(img))
        cv2.imwrite(str(root / f"baseline/{stem}.png"), to_u8(img))
        write_mask(root / f"test/masks/{stem}.png", (mask * 2).astype(np.uint8))
        labels[stem] = int(mask.any())
    write_labels_csv(root / "test/labels.csv", labels)


def paste_defects(rng: np.random.Generator, image: np.ndarray, n_defects: int = 1,
                  textures: tuple[str, ...] = TRAIN_TEXTURES, strength: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic defects of one random kind and style on a copy of a real image (the k normal
    shots, to calibrate a score fusion): ``(H, W, 3) uint8`` -> same-shape ``uint8`` image and
    ``(H, W) bool`` defect mask. ``strength`` in (0, 1]: opacity of the defects (fainter ones
    are harder to find). Any aspect ratio: coverage is drawn on the long side's square and
    cropped."""
    h, w = image.shape[:2]
    size = max(h, w)
    img = image.astype(np.float32) / 255.0
    style = sample_style(rng, str(rng.choice(DEFECTS)), textures)
    mask = np.zeros((h, w), bool)
    for _ in range(n_defects):
        cov = np.ascontiguousarray(defect_coverage(rng, style, size)[:h, :w])
        mask |= cov >= 0.5
        apply_defect(rng, img, cov * np.float32(strength), style)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), mask
