"""ROS-free core: features, clustering, anomaly analysis, segmenters, fusion, metrics.

Nothing under ``pasta_ros.core`` imports rclpy.
"""
