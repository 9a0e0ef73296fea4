"""Launch bev_perception_node with its parameters file and overrides.

    ros2 launch bev_quant_ros bev_perception.launch.py precision:=fp32 use_sim_time:=true namespace:=veh1

Arguments override entries of the parameters file; empty ones leave it alone. Topics are
node parameters set in the parameters file; relative ones resolve in ``namespace``.
Values outside an argument's choices stop the launch (exit non-zero) before the node starts.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bev_quant_ros.ros.parameters import PARAMS_BY_NAME

PACKAGE = "bev_quant_ros"
DEFAULT_PARAMS_FILE = Path("config") / "bev_perception.param.yaml"
# Overridable string parameters whose valid values the node's parameter table lists.
CHOICE_ARGUMENTS = ("precision", "backend", "image_transport")


def _default_params_file() -> str:
    """The installed parameters file; looked up only when params_file is not given, so an
    explicit params_file works outside an ament index too."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return str(Path(get_package_share_directory(PACKAGE)) / DEFAULT_PARAMS_FILE)
    except PackageNotFoundError as error:
        raise RuntimeError(f"{PACKAGE} is not in the ament index (AMENT_PREFIX_PATH); "
                           "install it (colcon build) or pass params_file:=<file>") from error


def _node(context) -> list[Node]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg("params_file") or _default_params_file()
    if not Path(params_file).is_file():
        raise FileNotFoundError(f"params_file {params_file!r} does not exist")
    overrides: dict[str, str | bool] = {name: arg(name) for name in ("model_path", *CHOICE_ARGUMENTS)
                                        if arg(name)}
    if arg("use_sim_time"):
        overrides["use_sim_time"] = arg("use_sim_time") == "true"
    return [Node(package=PACKAGE, executable="bev_perception_node", name="bev_perception_node",
                 namespace=arg("namespace"), output="screen", emulate_tty=True,
                 parameters=[params_file, overrides])]


def _choice_argument(name: str) -> DeclareLaunchArgument:
    spec = PARAMS_BY_NAME[name]
    return DeclareLaunchArgument(name, default_value="", choices=["", *spec.choices],
                                 description=f"{spec.description}; empty = params file")


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("params_file", default_value="", description="node parameters YAML; "
                              f"empty = share/{PACKAGE}/{DEFAULT_PARAMS_FILE}"),
        DeclareLaunchArgument("model_path", default_value="", description="ONNX model; empty = params file"),
        *map(_choice_argument, CHOICE_ARGUMENTS),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace (e.g. the vehicle)"),
        DeclareLaunchArgument("use_sim_time", default_value="", choices=["", "true", "false"],
                              description="follow /clock (bag replay); empty = params file"),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
