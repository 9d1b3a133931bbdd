"""``sensor_msgs/msg/Image`` and ``CompressedImage`` fields <-> ``(H, W, 3) uint8 RGB``.

The one message <-> array conversion, shared by the bag reader/writer and the ROS node (which
passes the fields of a live message). Pure numpy/OpenCV: no rclpy, no rosbags.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pasta_ros.data.images import ImageReadError, to_rgb_uint8

# encoding -> (channels, numpy dtype of one channel, channel order of the source)
_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"),
    "bgr8": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgba"),
    "bgra8": (4, "u1", "bgra"),
    "mono8": (1, "u1", "gray"),
    "8UC1": (1, "u1", "gray"),
    "mono16": (1, "u2", "gray"),
    "16UC1": (1, "u2", "gray"),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


def _as_bytes(data: Any) -> np.ndarray:
    """Flat uint8 view of a message's ``data`` (numpy array, bytes, array.array or list)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain sequence of ints
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_from_msg_fields(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool | int, data: Any
) -> np.ndarray:
    """Convert the fields of a ``sensor_msgs/msg/Image`` to ``(H, W, 3) uint8`` RGB.

    Honours ``step`` (row padding) and ``is_bigendian`` (16-bit encodings). ``data`` is any
    buffer of bytes (``bytes``, ``array.array``, uint8 numpy array). mono16 keeps the high
    byte (see :func:`~pasta_ros.data.images.to_rgb_uint8`); alpha is dropped.

    Raises:
        ImageReadError: unsupported encoding, inconsistent sizes or too little data.
    """
    if encoding not in _ENCODINGS:
        raise ImageReadError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(_ENCODINGS)}"
        )
    channels, kind, order = _ENCODINGS[encoding]
    itemsize = 2 if kind == "u2" else 1
    row_bytes = width * channels * itemsize
    if height <= 0 or width <= 0:
        raise ImageReadError(f"image has zero size ({width}x{height})")
    if step < row_bytes:
        raise ImageReadError(
            f"step {step} is smaller than width*channels*bytes = {row_bytes} for {encoding}"
        )
    buf = _as_bytes(data)
    if buf.size < step * height:
        raise ImageReadError(
            f"image data has {buf.size} bytes, expected step*height = {step * height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    dtype = np.dtype(("<" if kind == "u2" else "|") + kind)
    if kind == "u2" and is_bigendian:
        dtype = np.dtype(">u2")
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    if kind == "u2":
        pixels = pixels.astype(np.uint16)
    if order in ("bgr", "bgra"):
        pixels = pixels[:, :, [2, 1, 0]]
    elif order == "rgba":
        pixels = pixels[:, :, :3]
    return to_rgb_uint8(pixels)


def image_to_msg_fields(
    img: np.ndarray, encoding: str = "rgb8", *, is_bigendian: bool = False, row_padding: int = 0
) -> dict[str, Any]:
    """Fields of a ``sensor_msgs/msg/Image`` holding ``img``.

    ``img``: ``(H, W, 3) uint8`` RGB for any encoding; mono encodings also take ``(H, W)``
    gray (uint8, or uint16 for mono16). RGB -> gray uses OpenCV's luma weights; uint8 ->
    mono16 multiplies by 257 so that reading back gives the same bytes. Alpha is written
    as 255. ``row_padding`` extra zero bytes per row make ``step > width * channels``.

    Returns:
        dict with ``encoding, height, width, step, is_bigendian`` and ``data`` (flat uint8).
    """
    if encoding not in _ENCODINGS:
        raise ImageReadError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(_ENCODINGS)}"
        )
    channels, kind, order = _ENCODINGS[encoding]
    pixels = _pixels_for(img, channels, kind, order)
    if kind == "u2":
        pixels = pixels.astype(">u2" if is_bigendian else "<u2")
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(h, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((h, row_padding), np.uint8)], axis=1)
    return {
        "encoding": encoding,
        "height": h,
        "width": w,
        "step": rows.shape[1],
        "is_bigendian": int(bool(is_bigendian)),
        "data": rows.reshape(-1),
    }


def _pixels_for(img: np.ndarray, channels: int, kind: str, order: str) -> np.ndarray:
    if channels == 1:
        if img.ndim == 3:
            img = cv2.cvtColor(to_rgb_uint8(img), cv2.COLOR_RGB2GRAY)
        if kind == "u2":
            return img.astype(np.uint16) * 257 if img.dtype == np.uint8 else img.astype(np.uint16)
        return to_rgb_uint8(img)[:, :, 0]
    rgb = to_rgb_uint8(img)
    if order.startswith("bgr"):
        rgb = rgb[:, :, ::-1]
    if channels == 4:
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        rgb = np.concatenate([rgb, alpha], axis=2)
    return rgb


def decode_compressed(data: Any) -> np.ndarray:
    """Decode ``CompressedImage`` data (png, jpeg, ...) to ``(H, W, 3) uint8`` RGB.

    Colour images are taken to be stored BGR, as image_transport does.

    Raises:
        ImageReadError: the bytes cannot be decoded.
    """
    buf = _as_bytes(data)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ImageReadError("compressed image data cannot be decoded")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return to_rgb_uint8(img)
