"""The perception core: torch-free and ROS-free, shared by the node, the drive readers,
calibration, evaluation and the benchmarks (sensor frames in, boxes out)."""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "AssembledFrame": "frame_assembly",
    "BevPipeline": "pipeline",
    "Boxes3D": "boxes",
    "CLASS_NAMES": "boxes",
    "DecodeConfig": "box_decoding",
    "FrameAssembler": "frame_assembly",
    "ModelConfig": "model_config",
    "PipelineResult": "pipeline",
    "PoseBuffer": "temporal",
    "PreparedFrame": "pipeline",
    "ResetReason": "temporal",
    "Rig": "geometry",
    "SensorFrame": "pipeline",
    "StageTimings": "pipeline",
    "SyncCounters": "frame_assembly",
    "TemporalState": "temporal",
    "decode": "box_decoding",
    "load_model_config": "model_config",
    "load_rig": "geometry",
    "model_config_for_onnx": "model_config",
})
