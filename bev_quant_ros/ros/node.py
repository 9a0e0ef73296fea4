"""`bev_perception_node`: the ROS 2 adapter around the BEV pipeline.

Only ROS work happens here: parameters, subscriptions, message conversion,
the inference thread, publishing and diagnostics. Frame assembly, reset rules,
the engine and decoding are the plain-Python pipeline shared with the tools.

Threading: executor callbacks only store messages (cheap), so they never wait
for inference. Complete (or timed-out) camera sets go into a one-element
latest-wins slot; a preparing thread converts the messages of the newest set and
preprocesses them (image decode/resize and lidar raster release the GIL) into a
second latest-wins slot; the inference thread runs the recurrent engine on the
newest prepared frame, decodes and publishes. So frame N+1 is prepared while frame
N is in the engine. A frame replaced in either slot before it was taken is counted
as dropped.

Sensor modes (ros/diagnostics.py): each published frame is `fused`, `camera_only` (no sweep
younger than max_lidar_age_s) or `lidar_only` (no valid camera), counted as
`count.mode.<mode>`, shown as `last_frame.mode`, and logged once per transition.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from bev_quant_ros import __version__
from bev_quant_ros.engine.factory import BackendUnavailableError, select_backend, supported_options
from bev_quant_ros.errors import BevQuantError, ConfigError, InvalidMessageError
from bev_quant_ros.perception.frame_assembly import AssembledFrame, FrameAssembler
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.pipeline import BevPipeline, PipelineResult, PreparedFrame
from bev_quant_ros.perception.sensor_mode import sensor_mode
from bev_quant_ros.perception.temporal import PoseBuffer, TemporalState
from bev_quant_ros.resources import default_model_path
from bev_quant_ros.ros.diagnostics import ModeTracker, pipeline_status
from bev_quant_ros.ros.frame_slot import LatestSlot
from bev_quant_ros.ros.message_decoding import odometry_to_pose, poses_from_tf, stamp_to_ns
from bev_quant_ros.ros.message_encoding import boxes_to_detection_array, boxes_to_markers
from bev_quant_ros.ros.parameters import NODE_PARAMS, ParamSpec, validate
from bev_quant_ros.ros.rig_from_tf import RigCalibration
from bev_quant_ros.ros.runtime_stats import LogThrottle, RuntimeStats
from bev_quant_ros.ros.sensor_frames import EgoPoses, SensorFrameBuilder
from bev_quant_ros.ros.stage_worker import StageWorker

NODE_NAME = "bev_perception_node"
STAGES = ("convert", "preprocess", "engine", "decode", "processing", "pipeline_latency")
LOG_THROTTLE_S = 5.0
CLOCK_MISMATCH_MS = 3_600_000.0  # an hour: no real pipeline is that late


@dataclass
class _Prepared:
    """A prepared frame on its way from the preparing to the inference worker."""

    frame: PreparedFrame
    convert_ms: float  # ROS messages -> numpy (image decode, point cloud unpacking)


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """ROS descriptor for one spec, so `ros2 param describe` shows the range."""
    description = spec.description
    if spec.choices:
        description += f" (one of: {', '.join(spec.choices)})"
    descriptor = ParameterDescriptor(description=description, read_only=True)
    if spec.min_value is not None and spec.max_value is not None:
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
    return descriptor


class BevPerceptionNode(Node):
    """Six cameras + lidar + ego pose in, Detection3DArray out (see module docstring)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config = self._declare_and_validate_parameters()
        cfg = self.config
        self.pipeline = self._load_pipeline()
        description = self.pipeline.engine.describe()
        self.backend, self.precision = description.backend, description.precision
        self.calibration = RigCalibration(self.pipeline.rig, base_frame=cfg["output_frame_id"])
        self.assembler: FrameAssembler[Any, PointCloud2] = FrameAssembler(
            num_cameras=len(cfg["camera_names"]), sync_slop_s=cfg["sync_slop_s"],
            camera_timeout_s=cfg["camera_timeout_s"], max_lidar_age_s=cfg["max_lidar_age_s"])
        self.poses = PoseBuffer()
        self.stats = RuntimeStats(STAGES)
        self.log_throttle = LogThrottle(LOG_THROTTLE_S)
        self._clock_mismatch_reported = False
        self.slot: LatestSlot[AssembledFrame] = LatestSlot(cfg["frame_queue_depth"])
        self.prepared_slot: LatestSlot[_Prepared] = LatestSlot(cfg["frame_queue_depth"])
        self.compressed = cfg["image_transport"] == "compressed"
        # fully resolved (namespace, remaps): what is subscribed is what logs and diagnostics name
        self.image_topics = [self.resolve_topic_name(topic + "/compressed" if self.compressed else topic)
                             for topic in cfg["camera_image_topics"]]
        self.info_topics = [self.resolve_topic_name(topic) for topic in cfg["camera_info_topics"]]
        self.lidar_topic = self.resolve_topic_name(cfg["lidar_topic"])
        self.odom_topic = self.resolve_topic_name(cfg["odom_topic"])
        self.frame_builder = SensorFrameBuilder(self.pipeline.rig, self.pipeline.model_config, self.image_topics,
                                                self.lidar_topic, self._bad_input)
        self._lock = threading.Lock()  # assembler, poses and pending rig: executor vs worker
        self._pending_rig = None
        self._last_result: PipelineResult | None = None
        self._modes = ModeTracker()  # inference thread only: one log line per sensor-mode transition
        self._errors_at_last_report = 0
        self._start_monotonic = time.monotonic()

        self._create_subscriptions()
        self.detections_pub = self.create_publisher(Detection3DArray, "~/detections", 10)
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", 10) if cfg["publish_markers"] else None
        self.processing_time_pub = self.create_publisher(Float64, "~/debug/processing_time_ms", 10)
        self.latency_pub = self.create_publisher(Float64, "~/debug/pipeline_latency_ms", 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, cfg["diagnostics_topic"], 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        # wall-clock timers: with use_sim_time a paused or finished replay must not stop
        # diagnostics, and the assembler's arrival timeouts are in monotonic time anyway
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(cfg["diagnostics_period_s"], self._publish_diagnostics, clock=steady)
        self.create_timer(max(cfg["camera_timeout_s"] / 2.0, 0.01), self._poll_assembler, clock=steady)
        self._workers = [StageWorker("bev_prepare", self.slot, self._prepare_and_hand_over, self._stage_failed),
                         StageWorker("bev_inference", self.prepared_slot, self._infer_and_publish, self._stage_failed)]
        for worker in self._workers:
            worker.start()
        self.get_logger().info(
            f"{NODE_NAME} {__version__}: {description.backend} {description.precision} "
            f"model {description.model_path} ({description.details.get('selection_reason', '')})")

    # ---- start-up -------------------------------------------------------------------------
    def _declare_and_validate_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in NODE_PARAMS:
            try:
                values[spec.name] = self.declare_parameter(
                    spec.name, spec.default, _descriptor(spec)).value
            except Exception as exc:  # rclpy raises several types for a bad override
                raise ConfigError(f"parameter '{spec.name}': {exc}") from exc
        return validate(values)

    def _load_pipeline(self) -> BevPipeline:
        cfg = self.config
        try:
            rig = load_rig(cfg["rig_path"] or None)
        except ConfigError as exc:
            raise ConfigError(f"parameter 'rig_path': {exc}") from exc
        backend, _ = select_backend(cfg["backend"])  # the shipped INT8 flavour depends on it
        try:
            model_path = (Path(cfg["model_path"]) if cfg["model_path"]
                          else default_model_path(cfg["precision"], backend))
        except ConfigError as exc:
            raise ConfigError(f"parameter 'model_path' is empty and no shipped {cfg['precision']} "
                              f"model exists: {exc}") from exc
        temporal = TemporalState(max_gap_s=cfg["max_gap_s"], max_ego_speed_mps=cfg["max_ego_speed_mps"],
                                 max_ego_yaw_rate_rps=cfg["max_ego_yaw_rate_rps"])
        engine_options = supported_options(backend, {"intra_op_num_threads": cfg["intra_op_num_threads"]})
        try:
            pipeline = BevPipeline.from_model(
                model_path, backend=cfg["backend"], precision=cfg["precision"], rig=rig,
                score_threshold=cfg["score_threshold"], max_detections=cfg["max_detections"],
                temporal=temporal, **engine_options)
        except BackendUnavailableError as exc:
            raise ConfigError(f"parameter 'backend': {exc}") from exc
        except BevQuantError as exc:
            raise ConfigError(f"parameter 'model_path' ({model_path}): {exc}") from exc
        pipeline.warmup()
        return pipeline

    def _create_subscriptions(self) -> None:
        cfg = self.config
        sensor_qos = qos_profile_sensor_data if cfg["qos_reliability"] == "best_effort" else QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        for index, topic in enumerate(self.image_topics):
            self.create_subscription(CompressedImage if self.compressed else Image, topic,
                                     self._camera_callback(index), sensor_qos)
            self.create_subscription(CameraInfo, self.info_topics[index],
                                     self._camera_info_callback(index), sensor_qos)
        self.create_subscription(PointCloud2, self.lidar_topic, self._on_lidar, sensor_qos)
        if cfg["ego_pose_source"] == "odom":
            self.create_subscription(Odometry, self.odom_topic, self._on_odometry, sensor_qos)
        else:
            self.create_subscription(TFMessage, cfg["tf_topic"], self._on_tf, QoSProfile(depth=100))
        static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(TFMessage, cfg["tf_static_topic"], self._on_tf_static, static_qos)

    # ---- executor callbacks: store and return ---------------------------------------------
    def _camera_callback(self, index: int) -> Callable[[Image | CompressedImage], None]:
        def on_image(msg: Image | CompressedImage) -> None:
            self.stats.tick(f"camera_{index}")
            stamp_ns = self._stamp_or_none(self.image_topics[index], msg)
            if stamp_ns is None:
                return
            with self._lock:
                frames = self.assembler.add_camera(index, stamp_ns, msg)
            self._hand_over(frames)
        return on_image

    def _camera_info_callback(self, index: int) -> Callable[[CameraInfo], None]:
        def on_camera_info(msg: CameraInfo) -> None:
            with self._lock:
                try:
                    changed = self.calibration.apply_camera_info(index, msg)
                except InvalidMessageError as exc:
                    changed = False
                    self._bad_input(self.info_topics[index], exc)
                if changed:
                    self._pending_rig = self.calibration.rig
        return on_camera_info

    def _on_lidar(self, msg: PointCloud2) -> None:
        self.stats.tick("lidar")
        stamp_ns = self._stamp_or_none(self.lidar_topic, msg)
        if stamp_ns is not None:
            with self._lock:
                self.assembler.add_lidar(stamp_ns, msg)
                if self.calibration.update_lidar_frame(msg.header.frame_id):  # mount from tf_static
                    self._pending_rig = self.calibration.rig

    def _on_odometry(self, msg: Odometry) -> None:
        try:
            T = odometry_to_pose(msg)
        except InvalidMessageError as exc:
            self._bad_input(self.odom_topic, exc)
            return
        stamp_ns = self._stamp_or_none(self.odom_topic, msg)
        if stamp_ns is not None:
            with self._lock:
                self.poses.add(stamp_ns, T)

    def _on_tf(self, msg: TFMessage) -> None:
        poses = poses_from_tf(msg, self.config["odom_frame_id"], self.config["output_frame_id"])
        with self._lock:
            for stamp_ns, T in poses:
                self.poses.add(stamp_ns, T)

    def _on_tf_static(self, msg: TFMessage) -> None:
        with self._lock:
            if self.calibration.apply_tf_static(msg):
                self._pending_rig = self.calibration.rig

    def _stamp_or_none(self, topic: str, msg: Any) -> int | None:
        """The header stamp in ns; None (counted, logged) for a zero stamp: an unset header, not a time."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:
            self._bad_input(topic, InvalidMessageError("header stamp is zero (unset)", cause="zero_stamp"))
            return None
        return stamp_ns

    def _poll_assembler(self) -> None:
        with self._lock:
            frames = self.assembler.poll()
        self._hand_over(frames)

    def _hand_over(self, frames: list[AssembledFrame]) -> None:
        for frame in frames:
            self.slot.put(frame)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.pipeline.request_reset()
        response.success, response.message = True, "recurrent BEV state will be reset before the next frame"
        self.get_logger().info("reset requested through ~/reset")
        return response

    # ---- workers: prepare (convert + preprocess), then infer + publish ------------------------
    def _stage_failed(self, exc: Exception) -> None:
        self._bad_input("pipeline", exc)

    def _prepare_and_hand_over(self, assembled: AssembledFrame) -> None:
        self.prepared_slot.put(self._prepare(assembled))

    def _infer_and_publish(self, prepared: _Prepared) -> None:
        start = time.perf_counter()
        self._publish(self.pipeline.infer(prepared.frame), prepared, start)

    def _prepare(self, assembled: AssembledFrame) -> _Prepared:
        with self._lock:
            rig, self._pending_rig = self._pending_rig, None
            ego = EgoPoses.look_up(self.poses, assembled.stamp_ns, assembled.lidar_stamp_ns)
        if rig is not None:
            self.pipeline.set_rig(rig)
            self.frame_builder.set_rig(rig)
            self.get_logger().info("camera calibration changed: sampling grid recomputed")
        start = time.perf_counter()
        frame = self.frame_builder.build(assembled, ego)
        convert_ms = (time.perf_counter() - start) * 1e3
        return _Prepared(self.pipeline.prepare(frame), convert_ms)

    def _publish(self, result: PipelineResult, prepared: _Prepared, start: float) -> None:
        """Publish a frame's outputs; ``processing`` = the node's whole cost of the frame (message
        conversion, pipeline, building and publishing the detections), not counting the wait
        between the two workers."""
        frame_id = self.config["output_frame_id"]
        # counted before it is visible: whoever sees the detections sees them in the diagnostics
        self.stats.count("frames_processed")
        if result.reset_reason is not None:
            self.stats.count(f"resets.{result.reset_reason.value}")
            if self.log_throttle.allow(f"reset.{result.reset_reason.value}"):
                self.get_logger().info(f"recurrent state reset: {result.reset_reason.value}")
        mode = sensor_mode(result.camera_valid, result.lidar_used)
        self.stats.count(f"mode.{mode.value}")
        transition = self._modes.update(mode)
        if transition is not None:
            self.get_logger().info(transition)
        self._last_result = result
        self.detections_pub.publish(boxes_to_detection_array(result.detections, result.stamp_ns, frame_id))
        latency_ms = (self.get_clock().now().nanoseconds - result.stamp_ns) / 1e6
        self._check_clock(latency_ms)
        processing_ms = prepared.convert_ms + prepared.frame.preprocess_ms + (time.perf_counter() - start) * 1e3
        convert_ms = prepared.convert_ms
        if self.markers_pub is not None:
            self.markers_pub.publish(boxes_to_markers(result.detections, result.stamp_ns, frame_id))
        timings = result.timings
        self.processing_time_pub.publish(Float64(data=processing_ms))
        self.latency_pub.publish(Float64(data=latency_ms))
        for stage, value in (("convert", convert_ms), ("preprocess", timings.preprocess_ms),
                             ("engine", timings.engine_ms), ("decode", timings.decode_ms),
                             ("processing", processing_ms), ("pipeline_latency", latency_ms)):
            self.stats.add_latency(stage, value)
        self.stats.tick("output")

    def _bad_input(self, source: str, exc: Exception) -> None:
        """Count by topic and cause; log at most once per LOG_THROTTLE_S per cause."""
        cause = f"{source}: {getattr(exc, 'cause', type(exc).__name__)}"
        count = self.stats.error(cause)
        if self.log_throttle.allow(cause):
            self.get_logger().error(f"{cause} (#{count}): {exc}")

    def _check_clock(self, latency_ms: float) -> None:
        """Stamps hours away from the node clock: a bag replayed without use_sim_time (said once)."""
        if abs(latency_ms) > CLOCK_MISMATCH_MS and not self._clock_mismatch_reported:
            self._clock_mismatch_reported = True
            self.stats.count("clock_mismatch")
            self.get_logger().warning(
                f"camera stamps are {latency_ms / 1e3:.0f} s away from the node clock: pipeline latency is "
                "meaningless (replaying a bag? set use_sim_time:=true and publish /clock)")

    # ---- diagnostics ----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        counters = self.assembler.counters
        self.stats.set_count("frames_dropped_latest_wins", self.slot.dropped + self.prepared_slot.dropped)
        for name in ("frames_complete", "frames_partial", "frames_without_lidar", "frames_lidar_only",
                     "late_camera_messages",
                     "duplicate_camera_messages", "late_lidar_messages", "time_jumps_back"):
            self.stats.set_count(f"sync.{name}", getattr(counters, name))
        header = {"backend": self.backend, "precision": self.precision,
                  "uptime_s": f"{time.monotonic() - self._start_monotonic:.1f}"}
        report = pipeline_status(header, self.stats.key_values(), self._last_result, self.config["camera_names"],
                                 self._errors_at_last_report)
        self._errors_at_last_report = report.error_total
        status = DiagnosticStatus(level=bytes([report.level]), name=f"{self.get_name()}: pipeline",
                                  message=report.message, hardware_id=self.backend,
                                  values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def close(self) -> None:
        """Stop the worker threads (called before destroy_node)."""
        for worker in self._workers:
            worker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit code 2 on a bad parameter or model, 0 on shutdown."""
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
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
