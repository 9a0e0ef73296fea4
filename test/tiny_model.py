"""The small models every test uses, at test size.

`tiny_config()` is the shipped geometry family with 32 x 32 BEV cells of 3.2 m, 32 x 64
images and 8 state channels: the real network code and ONNX export run it fast.
`build_tiny_model()` builds a contract-conforming graph with `onnx.helper` alone, so
engine, pipeline and node tests need no torch (the optional 'train' extra): the same
tensor names and the same kinds of ops the real network uses (Conv, GridSample for the
camera lift, a MatMul-built affine grid + GridSample for the recurrent-state warp).
Given optional inputs (`dt`, `lidar_valid`, as a v3 model declares them), the graph echoes
them: box_reg's last two channels (vel_x, vel_y) are then dt and lidar_valid at every cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bev_quant_ros.engine.contract import BOX_REG_CHANNELS, NUM_CAMERAS, OPTIONAL_INPUTS
from bev_quant_ros.perception.model_config import ModelConfig, NetworkConfig, load_model_config

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "models" / "bev_tiny.yaml"
OPSET = 17
GRID_MATMUL = "state_grid_matmul"  # kept float when quantizing (warp grid arithmetic)


def tiny_config() -> ModelConfig:
    return dataclasses.replace(load_model_config(SHIPPED_CONFIG), Hb=32, Wb=32, image_height=32,
                               image_width=64, C=8,
                               network=NetworkConfig(image_channels=(8, 8), image_convs_per_stage=(2, 2),
                                                     lift_channels=4, attention_heads=2, attention_pool=4))


@dataclass(frozen=True)
class TinyDims:
    """Sizes of the onnx.helper graph; the default is fast, `bench()` runs a few ms."""

    image_h: int = 16
    image_w: int = 24
    z: int = 2
    hb: int = 8
    wb: int = 8
    lidar_channels: int = 3
    state_channels: int = 4
    image_channels: int = 4
    classes: int = 3
    head_stride: int = 2

    @classmethod
    def bench(cls) -> "TinyDims":
        return cls(image_h=64, image_w=176, z=4, hb=64, wb=64, lidar_channels=8,
                   state_channels=32, image_channels=16)

    @classmethod
    def of(cls, cfg: ModelConfig) -> "TinyDims":
        """The sizes a model config resolves the contract to, so the graph can stand in for its network."""
        return cls(image_h=cfg.image_height, image_w=cfg.image_width, z=cfg.Z, hb=cfg.Hb, wb=cfg.Wb,
                   lidar_channels=cfg.Cl, state_channels=cfg.C, classes=cfg.K, head_stride=cfg.output_stride)

    @property
    def ho(self) -> int:
        return self.hb // self.head_stride

    @property
    def wo(self) -> int:
        return self.wb // self.head_stride


def _weight(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 1.0) -> TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return numpy_helper.from_array((rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(np.float32), name)


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _base_grid(hb: int, wb: int) -> np.ndarray:
    """[Hb*Wb, 3] homogeneous normalised (x=column, y=row) cell centres for GridSample."""
    ys = (np.arange(hb, dtype=np.float32) + 0.5) / hb * 2.0 - 1.0
    xs = (np.arange(wb, dtype=np.float32) + 0.5) / wb * 2.0 - 1.0
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx, gy, np.ones_like(gx)], axis=-1).reshape(-1, 3).astype(np.float32)


def build_tiny_model(dims: TinyDims = TinyDims(), seed: int = 0,
                     optional_inputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Return the float contract graph (names from `contract.py`); `optional_inputs` are declared
    and echoed in box_reg's velocity channels (see the module docstring)."""
    d = dims
    rng = np.random.default_rng(seed)
    cam_feat = d.image_channels * d.z
    fused = cam_feat + d.lidar_channels + d.state_channels  # all on the head (state) grid
    head = d.classes + len(BOX_REG_CHANNELS)
    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("images", f32, [NUM_CAMERAS, 3, d.image_h, d.image_w]),
        helper.make_tensor_value_info("camera_valid", f32, [NUM_CAMERAS]),
        helper.make_tensor_value_info("cam_grid", f32, [d.z * d.ho, d.wo, 2]),
        helper.make_tensor_value_info("lidar_bev", f32, [d.lidar_channels, d.hb, d.wb]),
        helper.make_tensor_value_info("prev_bev", f32, [d.state_channels, d.ho, d.wo]),
        helper.make_tensor_value_info("ego_motion", f32, [2, 3]),
        helper.make_tensor_value_info("prev_valid", f32, [1]),
    ]
    outputs = [
        helper.make_tensor_value_info("heatmap", f32, [d.classes, d.ho, d.wo]),
        helper.make_tensor_value_info("box_reg", f32, [len(BOX_REG_CHANNELS), d.ho, d.wo]),
        helper.make_tensor_value_info("bev_state", f32, [d.state_channels, d.ho, d.wo]),
    ]
    inits = [
        _weight(rng, "img_w", (d.image_channels, 3, 3, 3), scale=1.0 / 255.0),  # takes 0..255 pixel values
        _const("img_b", np.zeros(d.image_channels, np.float32)),
        _const("valid_shape", np.array([NUM_CAMERAS, 1, 1, 1], np.int64)),
        _const("axis0", np.array([0], np.int64)),
        _const("canvas_shape", np.array([1, d.image_channels, d.image_h, NUM_CAMERAS * d.image_w], np.int64)),
        _const("lift_shape", np.array([1, cam_feat, d.ho, d.wo], np.int64)),
        _weight(rng, "lidar_w", (d.lidar_channels, d.lidar_channels, 3, 3)),
        _const("base_grid", _base_grid(d.ho, d.wo)),
        _const("grid_shape", np.array([1, d.ho, d.wo, 2], np.int64)),
        _weight(rng, "fuse_w", (d.state_channels, fused, 3, 3)),
        _const("fuse_b", rng.standard_normal(d.state_channels).astype(np.float32) * 0.1),
        _weight(rng, "head_w", (head, d.state_channels, 3, 3)),
        _const("head_b", np.zeros(head, np.float32)),
        _const("split", np.array([d.classes, len(BOX_REG_CHANNELS)], np.int64)),
    ]
    nodes = [
        # camera features, masked by camera_valid, laid side by side and lifted by one
        # parameter-free bilinear sampling at cam_grid (the camera canvas)
        helper.make_node("Conv", ["images", "img_w", "img_b"], ["img_f"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["img_f"], ["img_r"]),
        helper.make_node("Reshape", ["camera_valid", "valid_shape"], ["valid4"]),
        helper.make_node("Mul", ["img_r", "valid4"], ["img_m"]),
        helper.make_node("Transpose", ["img_m"], ["img_t"], perm=[1, 2, 0, 3]),
        helper.make_node("Reshape", ["img_t", "canvas_shape"], ["canvas"]),
        helper.make_node("Unsqueeze", ["cam_grid", "axis0"], ["cam_grid4"]),
        helper.make_node("GridSample", ["canvas", "cam_grid4"], ["lift"], align_corners=0),
        helper.make_node("Reshape", ["lift", "lift_shape"], ["cam_bev"]),
        # recurrent state: affine warp by ego_motion, zeroed when prev_valid = 0
        helper.make_node("Transpose", ["ego_motion"], ["theta_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["base_grid", "theta_t"], ["grid_flat"], name=GRID_MATMUL),
        helper.make_node("Reshape", ["grid_flat", "grid_shape"], ["state_grid"]),
        helper.make_node("Unsqueeze", ["prev_bev", "axis0"], ["prev4"]),
        helper.make_node("GridSample", ["prev4", "state_grid"], ["warped"], align_corners=0),
        helper.make_node("Mul", ["warped", "prev_valid"], ["warped_m"]),
        helper.make_node("Unsqueeze", ["lidar_bev", "axis0"], ["lidar_fine"]),
        helper.make_node("Conv", ["lidar_fine", "lidar_w"], ["lidar4"], pads=[1, 1, 1, 1],
                         strides=[d.head_stride, d.head_stride]),
        # fusion on the head grid → new state → head
        helper.make_node("Concat", ["cam_bev", "lidar4", "warped_m"], ["fused"], axis=1),
        helper.make_node("Conv", ["fused", "fuse_w", "fuse_b"], ["state_pre"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["state_pre"], ["state4"]),
        helper.make_node("Squeeze", ["state4", "axis0"], ["bev_state"]),
        helper.make_node("Conv", ["state4", "head_w", "head_b"], ["head4"], pads=[1, 1, 1, 1]),
        helper.make_node("Squeeze", ["head4", "axis0"], ["head3"]),
    ]
    if optional_inputs:
        inputs += [helper.make_tensor_value_info(name, f32, list(OPTIONAL_INPUTS[name])) for name in optional_inputs]
        echoed = list(optional_inputs) + ["echo_zero"] * (2 - len(optional_inputs))
        inits += [_const("split_echo", np.array([d.classes, len(BOX_REG_CHANNELS) - 2, 2], np.int64)),
                  _const("echo_zero", np.zeros(1, np.float32)), _const("echo_shape", np.array([2, 1, 1], np.int64)),
                  _const("echo_ones", np.ones((1, d.ho, d.wo), np.float32))]
        nodes += [
            helper.make_node("Split", ["head3", "split_echo"], ["hm_logit", "reg_geometry", "reg_velocity"], axis=0),
            helper.make_node("Concat", echoed, ["echo_flat"], axis=0),
            helper.make_node("Reshape", ["echo_flat", "echo_shape"], ["echo3"]),
            helper.make_node("Mul", ["echo3", "echo_ones"], ["echo"]),
            helper.make_node("Concat", ["reg_geometry", "echo"], ["box_reg"], axis=0),
        ]
    else:
        nodes.append(helper.make_node("Split", ["head3", "split"], ["hm_logit", "box_reg"], axis=0))
    nodes.append(helper.make_node("Sigmoid", ["hm_logit"], ["heatmap"]))
    graph = helper.make_graph(nodes, "tiny_bev", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def write_contract_model(cfg: ModelConfig, path: Path) -> Path:
    """Save the torch-free graph at `cfg`'s sizes and `cfg` next to it (as `model_config_for_onnx` reads it)."""
    onnx.save(build_tiny_model(TinyDims.of(cfg), optional_inputs=cfg.optional_inputs), path)
    cfg.save(path.with_suffix(".yaml"))
    return path
