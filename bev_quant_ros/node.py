"""`bev_perception_node`: the ROS 2 adapter around the BEV pipeline.

This module only does ROS work: declare and validate parameters, publish
diagnostics, and (as the pipeline lands) convert messages and publish
detections. Everything else is plain Python in the rest of the package.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from bev_quant_ros import __version__
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.params import NODE_PARAMS, ParamSpec, validate

NODE_NAME = "bev_perception_node"


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """ROS descriptor for one spec, so `ros2 param describe` shows the range."""
    description = spec.description
    if spec.choices:
        description += f" (one of: {', '.join(spec.choices)})"
    descriptor = ParameterDescriptor(description=description, read_only=True)
    if isinstance(spec.default, float) and spec.min_value is not None and spec.max_value is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)
        ]
    return descriptor


class BevPerceptionNode(Node):
    """Declares the parameters, validates them, and reports status on /diagnostics."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config = self._declare_and_validate_parameters()
        self._start_monotonic = time.monotonic()
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(self.config["diagnostics_period_s"],
                                                    self._publish_diagnostics)
        self.get_logger().info(
            f"{NODE_NAME} {__version__} configured: backend={self.config['backend']} "
            f"precision={self.config['precision']}")

    def _declare_and_validate_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in NODE_PARAMS:
            try:
                values[spec.name] = self.declare_parameter(
                    spec.name, spec.default, _descriptor(spec)).value
            except Exception as exc:  # rclpy raises several types for a bad override
                raise ConfigError(f"parameter '{spec.name}': {exc}") from exc
        return validate(values)

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{self.get_name()}: pipeline",
            message="configured, waiting for sensor data",
            hardware_id=self.config["backend"],
            values=[
                KeyValue(key="backend", value=self.config["backend"]),
                KeyValue(key="precision", value=self.config["precision"]),
                KeyValue(key="model_path", value=self.config["model_path"] or "<shipped default>"),
                KeyValue(key="uptime_s", value=f"{time.monotonic() - self._start_monotonic:.1f}"),
            ],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(msg)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit code 2 on a bad parameter, 0 on shutdown."""
    rclpy.init(args=list(sys.argv if argv is None else argv))
    try:
        node = BevPerceptionNode()
    except ConfigError as exc:
        print(f"[{NODE_NAME}] configuration error: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
