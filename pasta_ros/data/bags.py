"""ROS 2 bags <-> ``(H, W, 3) uint8 RGB`` frames, with no ROS install (``rosbags``).

Reads ``sensor_msgs/msg/Image`` and ``sensor_msgs/msg/CompressedImage`` from sqlite3 and mcap
bags, writes them for tests, the demo and ``pasta play``. The message <-> array conversion lives
in :mod:`pasta_ros.data.imgmsg` (re-exported here) so the ROS node can use it without rosbags.
Bags are written in rosbag2 format version 9 (Jazzy and later).
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from pasta_ros.core.errors import PastaError
from pasta_ros.data.images import to_rgb_uint8
from pasta_ros.data.imgmsg import (
    SUPPORTED_ENCODINGS,
    decode_compressed,
    image_from_msg_fields,
    image_to_msg_fields,
)

__all__ = [
    "COMPRESSED_MSGTYPE", "IMAGE_MSGTYPE", "SUPPORTED_ENCODINGS", "TYPESTORE", "BagError",
    "BagImageReader", "BagWriter", "decode_compressed", "image_from_msg_fields",
    "image_to_msg_fields", "list_image_topics", "make_compressed_msg", "make_image_msg",
    "read_bag_images", "write_bag_images",
]
log = logging.getLogger(__name__)

IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_MSGTYPES = (IMAGE_MSGTYPE, COMPRESSED_MSGTYPE)
# Image and CompressedImage are identical in every ROS 2 distro; Jazzy is the current LTS.
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


class BagError(PastaError, ValueError):
    """A bag cannot be read or written as asked; the message names the bag, topic or frame."""


# --------------------------------------------------------------------------- reading


def _open_reader(bag: str | Path) -> Reader:
    path = Path(bag)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError) as exc:
        raise BagError(
            f"{path} is not a readable ROS 2 bag (expected a folder with metadata.yaml and "
            f".db3/.mcap files, or a .mcap/.db3 file): {exc}"
        ) from exc
    return reader


def list_image_topics(bag: str | Path) -> dict[str, str]:
    """Topics of ``bag`` that carry Image or CompressedImage messages: ``{topic: msgtype}``."""
    reader = _open_reader(bag)
    try:
        return {
            t: info.msgtype for t, info in sorted(reader.topics.items())
            if info.msgtype in IMAGE_MSGTYPES
        }
    finally:
        reader.close()


def _resolve_topic(topics: dict[str, Any], topic: str, bag: Path) -> str:
    for candidate in (topic, "/" + topic.lstrip("/")):
        if candidate in topics:
            return candidate
    images = [t for t, i in sorted(topics.items()) if i.msgtype in IMAGE_MSGTYPES]
    found = ", ".join(images) if images else "none"
    raise BagError(f"topic {topic!r} is not in bag {bag}; image topics in the bag: {found}")


class BagImageReader:
    """Iterator over ``(timestamp_ns, (H, W, 3) uint8 RGB)`` frames of one bag topic.

    The bag and topic are checked when the reader is created, so errors appear at the call
    site. ``timestamp_ns`` is the header stamp, or the bag's receive time when the stamp is 0.
    Undecodable frames (bad encoding, truncated data) are skipped with a warning and counted
    in :attr:`skipped`; :attr:`read` counts frames yielded.

    Raises:
        BagError: missing path, not a bag, unknown topic, non-image topic, zero frames, or
            (at the end of iteration) every frame undecodable.
    """

    def __init__(self, bag: str | Path, topic: str, *, max_frames: int | None = None) -> None:
        self.bag = Path(bag)
        self.max_frames = max_frames
        self.skipped = 0
        self.read = 0
        reader = _open_reader(self.bag)
        try:
            self.topic = _resolve_topic(reader.topics, topic, self.bag)
            info = reader.topics[self.topic]
        finally:
            reader.close()
        self.msgtype = info.msgtype
        if self.msgtype not in IMAGE_MSGTYPES:
            raise BagError(
                f"topic {self.topic!r} in {self.bag} has type {self.msgtype}; expected "
                f"{IMAGE_MSGTYPE} or {COMPRESSED_MSGTYPE}"
            )
        self.message_count = int(info.msgcount)
        if self.message_count == 0:
            raise BagError(f"topic {self.topic!r} in {self.bag} has zero frames")
        self._frames: Iterator[tuple[int, np.ndarray]] | None = None

    def __iter__(self) -> BagImageReader:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._frames is None:
            self._frames = self._generate()
        return next(self._frames)

    def _generate(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.max_frames is not None and self.max_frames <= 0:
            return
        reader = _open_reader(self.bag)
        try:
            conns = [c for c in reader.connections if c.topic == self.topic]
            messages = reader.messages(connections=conns)
            for index in itertools.count():
                try:
                    _, log_ns, raw = next(messages)
                except StopIteration:
                    break
                except Exception as exc:  # storage-level damage: cannot continue the read
                    raise BagError(f"{self.bag}: storage error after {self.read} frames of "
                                   f"{self.topic!r}: {exc}") from exc
                frame = self._decode(raw, log_ns, index)
                if frame is None:
                    continue
                self.read += 1
                yield frame
                if self.max_frames is not None and self.read >= self.max_frames:
                    return
        finally:
            reader.close()
        if self.read == 0:
            raise BagError(
                f"no decodable frames on {self.topic!r} in {self.bag}: all {self.skipped} "
                "frames were skipped (see the warnings)"
            )

    def _decode(self, raw: bytes, log_ns: int, index: int) -> tuple[int, np.ndarray] | None:
        try:
            msg = TYPESTORE.deserialize_cdr(raw, self.msgtype)
            if self.msgtype == IMAGE_MSGTYPE:
                rgb = image_from_msg_fields(
                    msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data
                )
            else:
                rgb = decode_compressed(msg.data)
        except Exception as exc:  # any bad frame is skipped, never fatal
            self.skipped += 1
            log.warning(
                "%s %s: skipping undecodable frame %d (t=%d ns): %s",
                self.bag, self.topic, index, log_ns, exc,
            )
            return None
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return (stamp or log_ns), rgb


def read_bag_images(
    bag: str | Path, topic: str, *, max_frames: int | None = None
) -> BagImageReader:
    """Frames of ``topic`` in ``bag`` as an iterator of ``(timestamp_ns, (H, W, 3) uint8 RGB)``.

    Works for sqlite3 and mcap bags (folder or single file). See :class:`BagImageReader`
    for timestamps, skipped frames (``.skipped``) and errors.
    """
    return BagImageReader(bag, topic, max_frames=max_frames)


# --------------------------------------------------------------------------- writing


def make_image_msg(fields: dict[str, Any], stamp_ns: int, frame_id: str = "camera") -> Any:
    """A rosbags ``sensor_msgs/msg/Image`` from :func:`image_to_msg_fields` output."""
    t = TYPESTORE.types
    header = t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
        ),
        frame_id=frame_id,
    )
    return t[IMAGE_MSGTYPE](header=header, **fields)


def make_compressed_msg(
    img: np.ndarray, stamp_ns: int, *, fmt: str = "png", frame_id: str = "camera",
    jpeg_quality: int = 95,
) -> Any:
    """A rosbags ``sensor_msgs/msg/CompressedImage`` of ``(H, W, 3) uint8`` RGB ``img``.

    ``fmt`` is ``"png"`` (lossless) or ``"jpeg"``; the format string follows image_transport
    (``"rgb8; png compressed bgr8"``).
    """
    if fmt not in ("png", "jpeg"):
        raise BagError(f"compressed format must be 'png' or 'jpeg', got {fmt!r}")
    bgr = cv2.cvtColor(to_rgb_uint8(img), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", bgr, params)
    if not ok:
        raise BagError(f"OpenCV could not encode a {img.shape} image as {fmt}")
    t = TYPESTORE.types
    header = t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
        ),
        frame_id=frame_id,
    )
    return t[COMPRESSED_MSGTYPE](
        header=header, format=f"rgb8; {fmt} compressed bgr8", data=buf.reshape(-1)
    )


class BagWriter:
    """Context manager writing messages to a new bag (one connection per topic).

    ``storage`` is ``"mcap"`` or ``"sqlite3"``. An existing bag folder (one holding
    ``metadata.yaml``) is replaced only when ``overwrite=True``; any other existing path is an
    error. Topics without a leading ``/`` get one.
    """

    def __init__(
        self, bag: str | Path, *, storage: Literal["mcap", "sqlite3"] = "mcap",
        overwrite: bool = False,
    ) -> None:
        self.bag = Path(bag)
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        if self.bag.exists():
            if not overwrite:
                raise BagError(f"{self.bag} already exists (pass overwrite=True to replace it)")
            if not (self.bag / "metadata.yaml").is_file():
                raise BagError(f"{self.bag} exists and is not a bag folder; refusing to delete it")
            shutil.rmtree(self.bag)
        self._writer = Writer(self.bag, version=9, storage_plugin=plugins[storage])
        self._connections: dict[str, Any] = {}
        self.count = 0

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"cannot create bag {self.bag}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> Any:
        """Register ``topic`` (idempotent); a topic registered without messages stays empty."""
        topic = "/" + topic.lstrip("/")
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already has type {conn.msgtype}, not {msgtype}")
        return conn

    def write_raw(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        """Write already CDR-serialised bytes (e.g. deliberately corrupt test frames)."""
        self._writer.write(self.add_topic(topic, msgtype), stamp_ns, data)
        self.count += 1

    def write_msg(self, topic: str, msg: Any, stamp_ns: int) -> None:
        """Serialise a rosbags message object and write it."""
        self.write_raw(topic, msg.__msgtype__, stamp_ns, TYPESTORE.serialize_cdr(
            msg, msg.__msgtype__))

    def write_image(
        self, topic: str, img: np.ndarray, stamp_ns: int, *, encoding: str = "rgb8",
        frame_id: str = "camera", is_bigendian: bool = False, row_padding: int = 0,
    ) -> None:
        """Write ``img`` as a ``sensor_msgs/msg/Image`` (see :func:`image_to_msg_fields`)."""
        fields = image_to_msg_fields(
            img, encoding, is_bigendian=is_bigendian, row_padding=row_padding
        )
        self.write_msg(topic, make_image_msg(fields, stamp_ns, frame_id), stamp_ns)

    def write_compressed(
        self, topic: str, img: np.ndarray, stamp_ns: int, *, fmt: str = "png",
        frame_id: str = "camera",
    ) -> None:
        """Write ``(H, W, 3) uint8`` RGB ``img`` as a ``sensor_msgs/msg/CompressedImage``."""
        self.write_msg(topic, make_compressed_msg(img, stamp_ns, fmt=fmt, frame_id=frame_id),
                       stamp_ns)


def write_bag_images(
    bag: str | Path,
    topic: str,
    frames: Iterable[np.ndarray],
    *,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    encoding: str = "rgb8",
    fps: float = 10.0,
    frame_id: str = "camera",
    compressed: bool = False,
    compressed_format: str = "png",
    is_bigendian: bool = False,
    start_ns: int | None = None,
    overwrite: bool = False,
) -> int:
    """Write frames to a new bag as Image (or, with ``compressed``, CompressedImage) messages.

    ``frames``: ``(H, W, 3) uint8`` RGB (mono encodings also take ``(H, W)`` gray). Header
    stamps and receive times are ``start_ns + i / fps`` (``start_ns`` defaults to now).

    Returns:
        Number of frames written.
    """
    if fps <= 0:
        raise BagError(f"fps must be > 0, got {fps}")
    start = time.time_ns() if start_ns is None else int(start_ns)
    period = round(1e9 / fps)
    with BagWriter(bag, storage=storage, overwrite=overwrite) as writer:
        for i, frame in enumerate(frames):
            stamp = start + i * period
            if compressed:
                writer.write_compressed(topic, frame, stamp, fmt=compressed_format,
                                        frame_id=frame_id)
            else:
                writer.write_image(topic, frame, stamp, encoding=encoding, frame_id=frame_id,
                                   is_bigendian=is_bigendian)
        return writer.count
