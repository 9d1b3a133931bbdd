"""``pasta_msgs/InstanceArray`` and mono8 ``sensor_msgs/Image`` written straight to their
serialized (CDR) bytes.

Building an InstanceArray as Python message objects costs the node more than the rest of its
overhead together: a few dozen objects per instance (the contour alone is one ``Point32`` per
vertex), each converted again by rclpy when it is published. Here the same message is written
once into a ``bytearray`` in the wire format rclpy itself produces (XCDR1 little endian, the
encapsulation of ``rclpy.serialization.serialize_message``: 4-byte header ``00 01 00 00``,
every primitive aligned to its size from the end of that header), and published with
``Publisher.publish(bytes)``. The contour and mask go in as whole numpy buffers. Padding
bytes are zero (rclpy leaves whatever was in its buffer there), so the bytes are compared
through rclpy's deserialiser, field by field.

:func:`matches_rclpy` checks probe messages that way; the node runs it at each activation and
builds message objects instead if the layout ever differs (a changed ``.msg``).
``tests/test_cdr.py`` checks random instances and label images.
"""

from __future__ import annotations

import struct

import numpy as np

from pasta_ros.core.fusion import Instance
from pasta_ros.core.grasp_geometry import instance_geometry

ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little endian, no options
_I = struct.Struct("<I")
_STAMP = struct.Struct("<iI")
_HEAD = struct.Struct("<IB3xf")  # id, class_id, (pad to 4), score
_ROI = struct.Struct("<IIIIB")  # x_offset, y_offset, height, width, do_rectify
_POINT = struct.Struct("<ddd")
_SIZE2 = struct.Struct("<II")
_OBB = struct.Struct("<ddd3f")  # obb_center (x, y, z), obb_length, obb_width, obb_angle
_F = struct.Struct("<f")


class _Writer:
    """A CDR byte stream: alignment counted from the end of the encapsulation header."""

    def __init__(self) -> None:
        self.buf = bytearray(ENCAPSULATION)

    def align(self, n: int) -> None:
        pad = -(len(self.buf) - len(ENCAPSULATION)) % n
        if pad:
            self.buf += bytes(pad)

    def put(self, fmt: struct.Struct, *values, align: int = 4) -> None:
        self.align(align)
        self.buf += fmt.pack(*values)

    def string(self, text: str) -> None:
        raw = text.encode()
        self.put(_I, len(raw) + 1)
        self.buf += raw
        self.buf += b"\x00"

    def header(self, stamp: tuple[int, int], frame_id: str) -> None:
        self.put(_STAMP, *stamp)
        self.string(frame_id)

    def sequence(self, raw: bytes | memoryview, count: int, align: int) -> None:
        self.put(_I, count)
        if count:
            self.align(align)
            self.buf += raw

    def mono8(self, pixels: np.ndarray, stamp: tuple[int, int], frame_id: str) -> None:
        """A ``sensor_msgs/Image`` mono8 of ``(h, w) uint8`` ``pixels``, step = width."""
        h, w = pixels.shape
        self.header(stamp, frame_id)
        self.put(_SIZE2, h, w)
        self.string("mono8")
        self.buf += b"\x00"  # is_bigendian
        self.put(_I, w)
        self.sequence(np.ascontiguousarray(pixels, np.uint8).data, h * w, 1)


def _instance(w: _Writer, inst: Instance, stamp: tuple[int, int], frame_id: str,
              max_contour_vertices: int) -> None:
    x, y, bw, bh = (int(v) for v in inst.bbox)
    box, polygon = instance_geometry(inst.mask, (x, y), max_contour_vertices)
    w.put(_HEAD, int(inst.id), int(inst.label), float(inst.anomaly_share))
    w.put(_ROI, x, y, bh, bw, 0)  # RegionOfInterest field order: height before width
    w.put(_POINT, float(inst.centroid[0]), float(inst.centroid[1]), 0.0, align=8)
    w.put(_I, int(inst.area))
    w.mono8(inst.mask.view(np.uint8) * np.uint8(255), stamp, frame_id)
    w.put(_OBB, box.center[0], box.center[1], 0.0, box.length, box.width, box.angle, align=8)
    points = np.zeros((len(polygon), 3), "<f4")
    points[:, :2] = polygon
    w.sequence(points.tobytes(), len(polygon), 4)


def instance_array_cdr(instances: list[Instance], stamp: tuple[int, int], frame_id: str,
                       width: int, height: int, model_id: str,
                       max_contour_vertices: int = 32) -> tuple[bytearray, int]:
    """The serialized InstanceArray of ``instances`` (as ``convert.instance_array`` builds it,
    every mask header = the source header ``stamp`` (sec, nanosec) / ``frame_id``).

    Returns (bytes, offset of ``processing_time_ms``): the caller stamps that float32 with
    :func:`stamp_processing_time` just before publishing.
    """
    w = _Writer()
    w.header(stamp, frame_id)
    w.put(_SIZE2, int(width), int(height))
    w.string(model_id)
    w.align(4)
    offset = len(w.buf)
    w.buf += bytes(4)  # processing_time_ms, stamped later
    w.put(_I, len(instances))
    for inst in instances:
        _instance(w, inst, stamp, frame_id, max_contour_vertices)
    return w.buf, offset


def mono8_cdr(pixels: np.ndarray, stamp: tuple[int, int], frame_id: str) -> bytes:
    """The serialized mono8 ``sensor_msgs/Image`` of ``(H, W) uint8`` ``pixels`` (as
    ``convert.mono8_image`` builds it), header ``stamp`` (sec, nanosec) / ``frame_id``."""
    w = _Writer()
    w.mono8(pixels, stamp, frame_id)
    return bytes(w.buf)


def stamp_processing_time(buf: bytearray, offset: int, ms: float) -> None:
    """Write ``processing_time_ms`` into bytes from :func:`instance_array_cdr`."""
    _F.pack_into(buf, offset, ms)


def same_message(raw: bytes, msg) -> bool:
    """True when ``raw`` deserialises to the message rclpy's own bytes of ``msg`` give (both
    through float32 where the message type says so)."""
    from rclpy.serialization import deserialize_message, serialize_message

    kind = type(msg)
    return deserialize_message(raw, kind) == deserialize_message(serialize_message(msg), kind)


def matches_rclpy(max_contour_vertices: int = 32) -> bool:
    """True when :func:`instance_array_cdr` gives rclpy's message for a probe of two instances
    (one with a hole, one touching the frame corner), and :func:`mono8_cdr` for a label
    image."""
    from std_msgs.msg import Header

    from pasta_ros.ros import convert

    ids = np.zeros((40, 60), np.int32)
    ids[5:25, 8:30] = 1
    ids[10:14, 12:20] = 0
    ids[30:40, 45:60] = 2
    probes = [Instance(id=1, label=1, anomaly_share=0.0625, bbox=(8, 5, 22, 20), area=408,
                       centroid=(18.4, 14.7), mask=ids[5:25, 8:30] == 1),
              Instance(id=2, label=2, anomaly_share=0.5, bbox=(45, 30, 15, 10), area=150,
                       centroid=(52.0, 34.5), mask=ids[30:40, 45:60] == 2)]
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
    msg = convert.instance_array(probes, header, 60, 40, "model-x", max_contour_vertices)
    msg.processing_time_ms = 12.5
    raw, offset = instance_array_cdr(probes, (1_700_000_000, 123_456_789), "camera_optical",
                                     60, 40, "model-x", max_contour_vertices)
    stamp_processing_time(raw, offset, 12.5)
    labels = (ids * 60).astype(np.uint8)
    return same_message(bytes(raw), msg) and same_message(
        mono8_cdr(labels, (1_700_000_000, 123_456_789), "camera_optical"),
        convert.mono8_image(labels, header))
