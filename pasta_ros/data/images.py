"""Image files -> ``(H, W, 3) uint8 RGB`` arrays, with errors that name the file.

Every image that enters the pipeline (folders, bags, the ROS node) goes through
:func:`to_rgb_uint8`, so there is one definition of how gray, alpha, 16-bit and float images
become RGB bytes.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pasta_ros.core.errors import PastaError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)


class ImageReadError(PastaError, ValueError):
    """An image cannot be read or has an unsupported shape/dtype; the message names it."""


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Convert an image array to ``(H, W, 3) uint8`` RGB, C-contiguous.

    Accepted inputs (channel order is taken to be RGB/RGBA already):

    - ``(H, W)`` or ``(H, W, 1)`` gray: replicated to three channels.
    - ``(H, W, 3)`` RGB.
    - ``(H, W, 4)`` RGBA: alpha is dropped (not composited).
    - dtype ``uint8`` as is; ``uint16`` keeps the high byte (``v >> 8``, so 65535 -> 255 and
      12-bit data in the low bits comes out dark: rescale such data before calling);
      floating point must lie in ``[0, 1]`` and is mapped with ``round(v * 255)``.

    The result may share memory with ``img`` when no conversion is needed.

    Raises:
        ImageReadError: zero-size image, unsupported shape or dtype, float values outside
            ``[0, 1]`` or not finite.
    """
    if not isinstance(img, np.ndarray):
        raise ImageReadError(f"expected a numpy array, got {type(img).__name__}")
    if img.size == 0:
        raise ImageReadError(f"image is empty (shape {img.shape})")
    if img.ndim == 3 and img.shape[2] in (1, 3, 4):
        channels = img.shape[2]
    elif img.ndim == 2:
        channels = 1
    else:
        raise ImageReadError(
            f"unsupported image shape {img.shape}: expected (H, W), (H, W, 1), (H, W, 3) or "
            "(H, W, 4)"
        )
    out = _to_uint8(img)
    if channels == 1:
        out = out.reshape(out.shape[0], out.shape[1], 1)
        out = np.repeat(out, 3, axis=2)
    elif channels == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)):
            raise ImageReadError("float image contains NaN or infinite values")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageReadError(
                f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]"
            )
        return np.rint(img * 255.0).astype(np.uint8)
    raise ImageReadError(
        f"unsupported image dtype {img.dtype}: expected uint8, uint16 or float in [0, 1]"
    )


class ImageTooLarge(ImageReadError):
    """An image or frame over ``max_image_pixels``, refused before it is decoded."""


MIN_IMAGE_SIDE = 16  # pixels: smaller images hold no segmentable object


def check_image_size(width: int, height: int, max_pixels: int, what: str,
                     min_side: int = MIN_IMAGE_SIDE) -> None:
    """ImageReadError for a side under ``min_side``; ImageTooLarge when ``width * height``
    exceeds ``max_pixels`` (0 = no limit)."""
    if min(width, height) < min_side:
        raise ImageReadError(f"{what} is {width}x{height}: under {min_side} pixels per side, "
                             "too small to segment")
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(f"{what} is {width}x{height} = {width * height:,} pixels, over "
                            f"max_image_pixels = {max_pixels:,}: downscale it or raise "
                            "max_image_pixels")


def check_encoded_pixels(raw: bytes | np.ndarray, max_pixels: int, what: str) -> None:
    """Read the size from an encoded image's header (PNG, JPEG, ...; nothing is decoded) and
    :func:`check_image_size` it. Formats whose header Pillow cannot read pass unchecked."""
    if not max_pixels:
        return
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(raw))) as im:
            width, height = im.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above any sane frame
        if max_pixels < 2 * (Image.MAX_IMAGE_PIXELS or 0):
            raise ImageTooLarge(f"{what} has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
                                f"over max_image_pixels = {max_pixels:,}") from None
        return
    except Exception:  # noqa: BLE001 - not a header Pillow knows: OpenCV decides
        return
    check_image_size(width, height, max_pixels, what, min_side=0)


def read_image(path: str | Path, max_pixels: int = 0, min_side: int = 0) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB (see :func:`read_image_channels`)."""
    return read_image_channels(path, max_pixels, min_side)[0]


def read_image_channels(path: str | Path, max_pixels: int = 0,
                        min_side: int = 0) -> tuple[np.ndarray, int]:
    """Read an image file as ``(H, W, 3) uint8`` RGB, with the file's own channel count
    (1 gray, 3 colour, 4 with alpha), for callers that must not mix gray and colour sets.

    Decodes with OpenCV (``IMREAD_UNCHANGED``, so 16-bit and alpha are seen and handled by
    :func:`to_rgb_uint8`; EXIF orientation is not applied). An image of more than
    ``max_pixels`` pixels (0 = no limit) is refused from its header, before decoding; one
    with a side under ``min_side`` after decoding.

    Raises:
        ImageReadError: the file is missing, unreadable, corrupt, too large or of an
            unsupported layout; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        # np.fromfile + imdecode instead of imread: works for non-ASCII paths too.
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read image file {path}: {exc}") from exc
    check_encoded_pixels(raw, max_pixels, f"image {path}")
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if img is None:
        raise ImageReadError(
            f"cannot decode image file {path}: corrupt, truncated or not an image"
        )
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    try:
        rgb = to_rgb_uint8(img)
    except ImageReadError as exc:
        raise ImageReadError(f"{path}: {exc}") from exc
    check_image_size(rgb.shape[1], rgb.shape[0], max_pixels, f"image {path}", min_side)
    return rgb, 1 if img.ndim == 2 else int(img.shape[2])


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name.

    A file counts as an image by its extension (:data:`IMAGE_EXTENSIONS`, case-insensitive);
    hidden files (``.name``) are ignored. Subfolders are not searched.

    Raises:
        ImageReadError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageReadError(
            f"image folder not found: {folder} (expected a folder holding image files "
            f"with one of the extensions {exts})"
        )
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


@dataclass
class ReadStats:
    """Counts kept by :func:`iter_images`: images read and files skipped (with the reason)."""

    read: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        """Number of files skipped because they could not be read."""
        return len({path for path, _ in self.skipped})  # a set read twice counts once

    def summary(self) -> str:
        """One line for a CLI, e.g. ``"40 images read, 2 skipped"``."""
        return f"{self.read} images read, {self.n_skipped} skipped"


def iter_images(
    paths: Iterable[str | Path],
    *,
    stats: ReadStats | None = None,
    on_skip: Callable[[Path, str], None] | None = None,
    max_pixels: int = 0,
    min_side: int = 0,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(stem, (H, W, 3) uint8 RGB)`` for each readable file, in the given order.

    Unreadable files, images over ``max_pixels`` (0 = no limit) and images with a side under
    ``min_side`` are skipped with a logged warning, recorded in ``stats`` (when given) and
    reported to ``on_skip(path, reason)`` (when given); they never stop the iteration.
    """
    for p in paths:
        p = Path(p)
        try:
            img = read_image(p, max_pixels, min_side)
        except ImageReadError as exc:
            log.warning("skipping unreadable image: %s", exc)
            if stats is not None:
                stats.skipped.append((p, str(exc)))
            if on_skip is not None:
                on_skip(p, str(exc))
            continue
        if stats is not None:
            stats.read += 1
        yield p.stem, img
