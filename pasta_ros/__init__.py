"""pasta_ros: label-free anomaly and target segmentation for robotic sorting (PASTA, iCAS)."""

__version__ = "0.1.0"
