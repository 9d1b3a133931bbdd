"""Launch one pasta_node per camera of a camera list file (see pasta_ros/ros/cameras.py):

  ros2 launch pasta_ros cameras.launch.py cameras:=/path/cameras.yaml [config:=my_sorter.yaml]

Each node gets its own namespace (topics, services), input topic, model and recalibration
folder (lineage), and the shared parameters file. The tests start the nodes with exactly the
arguments computed here (pasta_ros.ros.cameras.CameraSpec.ros_arguments).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def _nodes(context):
    from pasta_ros.ros.cameras import load_cameras

    config = LaunchConfiguration("config").perform(context)
    return [Node(package="pasta_ros", executable="pasta_node", name="pasta_node",
                 namespace=cam.namespace, parameters=[config, cam.node_parameters()],
                 remappings=[("image", cam.image_topic)], output="screen", emulate_tty=True)
            for cam in load_cameras(LaunchConfiguration("cameras").perform(context))]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            "cameras", description="camera list file (YAML 'cameras:' list: namespace, "
                                   "image_topic, model_dir, optional lineage, "
                                   "camera_info_topic, parameters)"),
        DeclareLaunchArgument(
            "config",
            default_value=PathJoinSubstitution([FindPackageShare("pasta_ros"), "config",
                                                "sorter.yaml"]),
            description="parameters file shared by every camera's node (ros__parameters form)"),
        OpaqueFunction(function=_nodes),
    ])
