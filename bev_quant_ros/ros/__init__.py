"""The ROS 2 adapter: node wiring, parameters, message conversion, diagnostics.

Only `node` and `message_encoding` import rclpy and the message packages (import them by
module); the names below read messages by their fields (rclpy and rosbags messages alike),
so the offline drive readers share them without a ROS install.
"""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "EgoPoses": "sensor_frames",
    "LatestSlot": "frame_slot",
    "LogThrottle": "runtime_stats",
    "NODE_PARAMS": "parameters",
    "ParamSpec": "parameters",
    "PipelineStatus": "diagnostics",
    "RigCalibration": "rig_from_tf",
    "RuntimeStats": "runtime_stats",
    "ScaledImageDecoder": "message_decoding",
    "SensorFrameBuilder": "sensor_frames",
    "StageWorker": "stage_worker",
    "VELOCITY_HYPOTHESIS": "detection_encoding",
    "build_detection_array": "detection_encoding",
    "detection_array_to_boxes": "detection_encoding",
    "image_to_rgb": "message_decoding",
    "pipeline_status": "diagnostics",
    "pointcloud_to_points": "message_decoding",
    "validate": "parameters",
})
