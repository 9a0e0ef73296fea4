"""Engine-test helpers around the tiny contract graph of `tiny_model.py`.

Random frames in the contract's value ranges, the full feed with the recurrent state,
and the graph's INT8 Q/DQ twin made with `onnxruntime.quantization.quantize_static`
under the project's TensorRT-consumable settings (docs/architecture.md §3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from bev_quant_ros.engine.contract import NUM_CAMERAS
from tiny_model import GRID_MATMUL, TinyDims, build_tiny_model


def random_frame(dims: TinyDims, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One frame of engine inputs (no state tensors), plausible ranges."""
    ego = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    ego[:, 2] = rng.uniform(-0.1, 0.1, 2)
    valid = np.ones(NUM_CAMERAS, np.float32)
    valid[rng.integers(NUM_CAMERAS)] = 0.0
    return {
        "images": rng.uniform(0, 255, (NUM_CAMERAS, 3, dims.image_h, dims.image_w)).astype(np.float32),
        "camera_valid": valid,
        "cam_grid": rng.uniform(-1.1, 1.1, (dims.z * dims.ho, dims.wo, 2)).astype(np.float32),
        "lidar_bev": rng.uniform(0, 1, (dims.lidar_channels, dims.hb, dims.wb)).astype(np.float32),
        "ego_motion": ego,
    }


def with_state(frame: dict[str, np.ndarray], prev_bev: np.ndarray, prev_valid: float) -> dict[str, np.ndarray]:
    """The full feed of the raw graph: a frame plus the recurrent-state inputs."""
    return {**frame, "prev_bev": prev_bev, "prev_valid": np.array([prev_valid], np.float32)}


class _SequenceReader:
    """CalibrationDataReader over a short sequence whose state is fed back (docs/architecture.md §3)."""

    def __init__(self, model_path: Path, dims: TinyDims, frames: int = 4) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(1)
        state = np.zeros((dims.state_channels, dims.ho, dims.wo), np.float32)
        self._feeds = []
        for index in range(frames):
            feed = with_state(random_frame(dims, rng), state, float(index > 0))
            self._feeds.append(feed)
            state = session.run(["bev_state"], feed)[0]
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def write_tiny_models(directory: Path, dims: TinyDims = TinyDims()) -> tuple[Path, Path]:
    """Write `tiny_fp32.onnx` and its Q/DQ INT8 twin `tiny_int8.onnx`; return both paths."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / "tiny_fp32.onnx"
    int8 = directory / "tiny_int8.onnx"
    onnx.save(build_tiny_model(dims), fp32)
    quantize_static(
        str(fp32), str(int8), _SequenceReader(fp32, dims),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        per_channel=True, nodes_to_exclude=[GRID_MATMUL],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    return fp32, int8

