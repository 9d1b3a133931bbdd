"""Data access: image files, ROS 2 bags, the dataset layout and synthetic datasets.

Only the light modules are re-exported here; import ``pasta_ros.data.bags`` (rosbags) and
``pasta_ros.data.synth`` (scikit-image) explicitly.
"""

from pasta_ros.data.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    ReadStats,
    iter_images,
    list_images,
    read_image,
    to_rgb_uint8,
)
from pasta_ros.data.layout import (
    DatasetLayout,
    LayoutError,
    read_labels_csv,
    read_mask,
    test_pairs,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetLayout",
    "ImageReadError",
    "LayoutError",
    "ReadStats",
    "iter_images",
    "list_images",
    "read_image",
    "read_labels_csv",
    "read_mask",
    "test_pairs",
    "to_rgb_uint8",
]
