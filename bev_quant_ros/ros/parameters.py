"""The node's parameters: one table with defaults, descriptions and valid ranges.

Kept free of rclpy so the table can be validated, documented (README tables)
and compared with config/bev_perception.yaml in plain unit tests. The node turns
each entry into a ROS ParameterDescriptor and calls :func:`validate` at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bev_quant_ros.errors import ConfigError

DEFAULT_CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT",
)


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: its default, what it means, and what values are valid."""

    name: str
    default: Any
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] | None = None
    list_length: int | None = None

    def check(self, value: Any) -> None:
        """Raise ConfigError naming this parameter when ``value`` is not valid."""
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"parameter '{self.name}' must be of type {expected.__name__}, "
                              f"got {value!r}")
        if self.min_value is not None and value < self.min_value:
            raise ConfigError(f"parameter '{self.name}' = {value!r} is below its minimum {self.min_value}")
        if self.max_value is not None and value > self.max_value:
            raise ConfigError(f"parameter '{self.name}' = {value!r} is above its maximum {self.max_value}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"parameter '{self.name}' = {value!r} is not one of {list(self.choices)}")
        if self.list_length is not None:
            if len(value) != self.list_length or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"parameter '{self.name}' must list {self.list_length} non-empty "
                                  f"names, got {list(value)!r}")
            if len(set(value)) != len(value):
                raise ConfigError(f"parameter '{self.name}' has duplicate entries: {list(value)!r}")


NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "",
              "ONNX model (Q/DQ INT8 or FP32); empty = the package's shipped default model"),
    ParamSpec("backend", "auto", "inference runtime; auto = TensorRT when a GPU and TensorRT "
              "are present, else ONNX Runtime", choices=("auto", "onnxruntime", "tensorrt")),
    ParamSpec("precision", "int8", "engine precision to run", choices=("int8", "fp32")),
    ParamSpec("rig_path", "", "rig YAML (camera intrinsics/extrinsics, lidar mount); empty = shipped "
              "config/rig_nuscenes.yaml; CameraInfo and /tf_static override it at run time"),
    ParamSpec("output_frame_id", "base_link", "ego frame: detections are stamped with it and "
              "camera extrinsics are looked up relative to it in /tf_static"),
    ParamSpec("intra_op_num_threads", 1, "ONNX Runtime threads per inference; 0 = one per core. One "
              "leaves a core to the preparing worker, and on the 2-vCPU reference machine one "
              "thread also ran the engine faster than two (benchmarks/results/quant.json)",
              min_value=0, max_value=64),
    ParamSpec("camera_names", list(DEFAULT_CAMERA_NAMES),
              "the six cameras in model order; topics are /<name>/image_raw and /<name>/camera_info",
              list_length=6),
    ParamSpec("image_transport", "raw", "camera message type: raw = sensor_msgs/Image, "
              "compressed = sensor_msgs/CompressedImage", choices=("raw", "compressed")),
    ParamSpec("lidar_topic", "/lidar/points", "sensor_msgs/PointCloud2 topic"),
    ParamSpec("ego_pose_source", "odom", "where the ego pose comes from: odom = nav_msgs/Odometry "
              "on odom_topic, tf = the odom_frame_id -> output_frame_id transform on /tf",
              choices=("odom", "tf")),
    ParamSpec("odom_topic", "/odom", "nav_msgs/Odometry topic with the ego pose"),
    ParamSpec("odom_frame_id", "odom", "fixed frame of the ego pose when ego_pose_source = tf"),
    ParamSpec("qos_reliability", "best_effort", "sensor subscription reliability",
              choices=("best_effort", "reliable")),
    ParamSpec("sync_slop_s", 0.02, "max stamp spread of one camera set", min_value=0.0, max_value=0.1),
    ParamSpec("max_lidar_age_s", 0.2, "oldest lidar sweep fused with a camera set",
              min_value=0.0, max_value=1.0),
    ParamSpec("camera_timeout_s", 0.1, "a camera later than this is marked invalid for the frame",
              min_value=0.0, max_value=1.0),
    ParamSpec("max_gap_s", 0.5, "a longer gap between frames resets the recurrent state",
              min_value=0.0, max_value=10.0),
    ParamSpec("max_ego_speed_mps", 70.0, "a pose step implying a higher speed is a jump and "
              "resets the recurrent state", min_value=1.0, max_value=200.0),
    ParamSpec("max_ego_yaw_rate_rps", 3.0, "a pose step implying a higher yaw rate resets the state",
              min_value=0.1, max_value=20.0),
    ParamSpec("score_threshold", 0.3, "minimum detection score published", min_value=0.001, max_value=1.0),
    ParamSpec("frame_queue_depth", 1, "frames each worker stage may hold before the oldest is dropped "
              "(latest wins); 1 keeps only the newest frame (lowest latency), 2 absorbs one frame of "
              "delivery jitter (fewer drops, up to a frame more latency)",
              min_value=1, max_value=4),
    ParamSpec("max_detections", 100, "most detections published per frame", min_value=1, max_value=1000),
    ParamSpec("publish_markers", True, "also publish ~/markers (visualization_msgs/MarkerArray)"),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics messages",
              min_value=0.05, max_value=60.0),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in NODE_PARAMS}


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every known parameter value; return them with floats normalised.

    Raises ConfigError naming the first bad or unknown parameter, so a
    misconfigured vehicle fails at start-up instead of at the first frame.
    """
    unknown = sorted(set(values) - set(PARAMS_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown parameter(s): {', '.join(unknown)}")
    checked: dict[str, Any] = {}
    for spec in NODE_PARAMS:
        value = values.get(spec.name, spec.default)
        spec.check(value)
        checked[spec.name] = float(value) if isinstance(spec.default, float) else value
    return checked
