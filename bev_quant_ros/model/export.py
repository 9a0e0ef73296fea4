"""ONNX export of the reference network with the exact engine I/O contract.

The exported graph is batch-free with static shapes (``ContractWrapper``), opset 17
(GridSample needs >= 16), constant-folded, and checked against PyTorch on real inputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bev_quant_ros.engine.contract import CONTRACT_OUTPUTS
from bev_quant_ros.errors import ModelContractError
from bev_quant_ros.model.network import BEVDetector, ContractWrapper
from bev_quant_ros.perception.model_config import ModelConfig, example_inputs

OPSET = 17
MAX_ABS_DIFF = 1e-4


def export_onnx(detector: BEVDetector, out_path: str | Path, inputs: dict[str, np.ndarray] | None = None) -> Path:
    """Write the ONNX model and the model config YAML next to it; returns the ONNX path."""
    cfg = detector.cfg
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    inputs = inputs if inputs is not None else example_inputs(cfg)
    wrapper = ContractWrapper(detector).eval()
    names = list(cfg.input_shapes())  # the contract inputs, then the optional ones the model declares
    args = tuple(torch.from_numpy(inputs[name]) for name in names)
    # the TorchScript exporter is chosen on purpose (static opset-17 graph); silence its deprecation note
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, args, str(out_path), input_names=names,
                          output_names=list(CONTRACT_OUTPUTS), opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    cfg.save(out_path.with_suffix(".yaml"))
    return out_path


def compare_with_torch(detector: BEVDetector, onnx_path: str | Path,
                       inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs difference ONNX Runtime vs PyTorch per contract output."""
    wrapper = ContractWrapper(detector).eval()
    with torch.no_grad():
        expected = wrapper(*(torch.from_numpy(inputs[name]) for name in detector.cfg.input_shapes()))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {a.name: inputs[a.name] for a in session.get_inputs()}
    got = session.run(list(CONTRACT_OUTPUTS), feeds)
    return {name: float(np.max(np.abs(g - e.numpy()))) for name, g, e in zip(CONTRACT_OUTPUTS, got, expected)}


def check_contract(onnx_path: str | Path, cfg: ModelConfig) -> None:
    """Raise ModelContractError unless the ONNX I/O names and shapes equal the resolved contract."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for kind, args, expected in (("input", session.get_inputs(), cfg.input_shapes()),
                                 ("output", session.get_outputs(), cfg.output_shapes())):
        got = {a.name: tuple(a.shape) for a in args}
        if got != expected:
            raise ModelContractError(f"{onnx_path}: {kind}s {got} differ from the contract {expected}")


def real_inputs(cfg: ModelConfig, seed: int = 100_000, condition: str = "day",
                frame_index: int = 1) -> dict[str, np.ndarray]:
    """Contract inputs of a real synthetic frame (held-out seed); prev_bev is noise with
    prev_valid = 1 so the comparison also covers the warp of the recurrent state."""
    from bev_quant_ros.model.dataset import frame_inputs
    from bev_quant_ros.perception.geometry import load_rig
    from bev_quant_ros.perception.preprocess import camera_sampling_grid, ego_motion_affine
    from bev_quant_ros.sim import generate_frames

    rig = load_rig()
    frames = list(generate_frames(seed, condition, frame_index + 1, rig=rig))
    images, raster = frame_inputs(frames[-1], rig, cfg)
    inputs = example_inputs(cfg)
    inputs.update(images=images, cam_grid=camera_sampling_grid(rig, cfg), lidar_bev=raster,
                  ego_motion=ego_motion_affine(frames[-2].ego_pose, frames[-1].ego_pose, cfg))
    return inputs
