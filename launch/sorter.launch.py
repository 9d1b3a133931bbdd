"""Launch pasta_node for a sorting cell: camera images in, 3-class masks and anomaly instances
out on <namespace>/pasta/segmentation and <namespace>/pasta/anomaly_masks.

  ros2 launch pasta_ros sorter.launch.py model_dir:=/path/to/model image_topic:=/camera/image_raw

Every argument has a description (`ros2 launch pasta_ros sorter.launch.py --show-args`). The
tests read this file (ast) and start pasta_node with exactly the --ros-args it passes.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            "config",
            default_value=PathJoinSubstitution([FindPackageShare("pasta_ros"), "config",
                                                "sorter.yaml"]),
            description="parameters file of pasta_node (ros__parameters form): thresholds, "
                        "backbone, input size, QoS, overlay, models_root"),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw",
            description="camera topic remapped onto the node's input 'image' (an Image topic; "
                        "for CompressedImage set input_type: compressed in the config and "
                        "give the .../compressed topic)"),
        DeclareLaunchArgument(
            "model_dir", default_value="",
            description="calibrated model directory (pasta calibrate --out); '' = the newest "
                        "model under the config's models_root"),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="namespace of the node and its topics/service (one per camera)"),
        DeclareLaunchArgument(
            "dds_profile",
            default_value=PathJoinSubstitution([FindPackageShare("pasta_ros"), "config",
                                                "fastdds_shm.xml"]),
            description="Fast DDS profile of the node: the shipped one moves large frames "
                        "over shared memory (the default transports lost them between "
                        "processes, see BENCHMARKS.md); give the camera driver and planner "
                        "the same file. '' = the middleware's defaults"),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",  # Fast DDS 2.x (Jazzy)
                               LaunchConfiguration("dds_profile")),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",  # Fast DDS 3.x
                               LaunchConfiguration("dds_profile")),
        Node(
            package="pasta_ros",
            executable="pasta_node",
            name="pasta_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config"),
                        {"model_dir": LaunchConfiguration("model_dir")}],
            remappings=[("image", LaunchConfiguration("image_topic"))],
            output="screen",
            emulate_tty=True,
        ),
    ])
