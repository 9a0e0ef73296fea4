"""Launch bev_perception_node with its parameters file and overrides.

    ros2 launch bev_quant_ros bev_perception.launch.py precision:=fp32 use_sim_time:=true

Arguments override entries of the parameters file; empty ones leave it alone.
Topic remaps let a vehicle with other topic names keep the node's defaults.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "bev_quant_ros"


def _node(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {name: arg(name) for name in ("model_path", "precision", "backend", "image_transport")
                 if arg(name)}
    overrides["use_sim_time"] = arg("use_sim_time").lower() in ("true", "1")
    remappings = [(source, target) for source, target in (
        ("/lidar/points", arg("lidar_topic")), ("/odom", arg("odom_topic")))
        if target and target != source]
    return [Node(package=PACKAGE, executable="bev_perception_node", name="bev_perception_node",
                 namespace=arg("namespace"), output="screen", emulate_tty=True,
                 parameters=[arg("params_file"), overrides], remappings=remappings)]


def generate_launch_description() -> LaunchDescription:
    default_params = str(Path(get_package_share_directory(PACKAGE)) / "config" / "bev_perception.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters YAML"),
        DeclareLaunchArgument("model_path", default_value="", description="ONNX model; empty = shipped default"),
        DeclareLaunchArgument("precision", default_value="", description="int8 or fp32; empty = params file"),
        DeclareLaunchArgument("backend", default_value="", description="auto, onnxruntime or tensorrt"),
        DeclareLaunchArgument("image_transport", default_value="", description="raw or compressed"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bag replay)"),
        DeclareLaunchArgument("lidar_topic", default_value="/lidar/points", description="remap of /lidar/points"),
        DeclareLaunchArgument("odom_topic", default_value="/odom", description="remap of /odom"),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
