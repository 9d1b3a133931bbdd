"""Re-iterable image sources for calibration and segmentation: folders or ROS 2 bags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pasta_ros.core.features import ImageSource
from pasta_ros.data.bags import read_bag_images
from pasta_ros.data.images import (
    MIN_IMAGE_SIDE,
    ImageReadError,
    ReadStats,
    iter_images,
    list_images,
)


def is_bag(path: str | Path) -> bool:
    """A ROS 2 bag: a folder with metadata.yaml, or a single .mcap / .db3 file."""
    p = Path(path)
    return (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix in (".mcap", ".db3")


def folder_source(folder: str | Path, stats: ReadStats | None = None, *,
                  max_pixels: int = 0) -> ImageSource:
    """All images in a folder, sorted by name; unreadable ones, those of more than
    ``max_pixels`` pixels (0 = no limit) and those too small to segment (a side under
    :data:`~pasta_ros.data.images.MIN_IMAGE_SIDE`) are skipped and counted."""
    paths = list_images(folder)

    def images() -> Iterator[tuple[str, np.ndarray]]:
        return iter_images(paths, stats=stats, max_pixels=max_pixels, min_side=MIN_IMAGE_SIDE)
    return images


def bag_source(bag: str | Path, topic: str, max_frames: int | None = None) -> ImageSource:
    """Frames of one image topic of a bag, named by their stamp in nanoseconds."""
    read_bag_images(bag, topic, max_frames=max_frames)  # validate now: errors at the call site

    def images() -> Iterator[tuple[str, np.ndarray]]:
        for stamp, rgb in read_bag_images(bag, topic, max_frames=max_frames):
            yield str(stamp), rgb
    return images


def open_source(path: str | Path, topic: str | None = None, *,
                stats: ReadStats | None = None, max_pixels: int = 0) -> ImageSource:
    """An image folder or, when ``path`` is a bag, its ``topic`` (required then)."""
    if is_bag(path):
        if not topic:
            raise ImageReadError(f"{path} is a ROS 2 bag: give the image topic with --topic")
        return bag_source(path, topic)
    if not Path(path).exists():
        raise ImageReadError(f"{path} does not exist: expected an image folder or a ROS 2 bag")
    return folder_source(path, stats, max_pixels=max_pixels)
