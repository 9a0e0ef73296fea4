"""Wrong models fail at load time with a ModelContractError naming the tensor."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from bev_quant_ros.engine.factory import create_engine
from bev_quant_ros.engine.io_check import TensorSpec, check_contract, onnx_precision, onnx_specs, read_onnx
from bev_quant_ros.errors import ModelContractError
from bev_quant_ros.perception.model_config import model_config_for_onnx
from tiny_model import TinyDims, build_tiny_model

DIMS = TinyDims()
MODELS = Path(__file__).resolve().parents[2] / "models"


def _save(model: onnx.ModelProto, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _set_dim(model: onnx.ModelProto, tensor: str, axis: int, value: int | str) -> onnx.ModelProto:
    for info in list(model.graph.input) + list(model.graph.output):
        if info.name == tensor:
            dim = info.type.tensor_type.shape.dim[axis]
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
            return model
    raise AssertionError(tensor)


def test_valid_model_resolves_every_symbol():
    inputs, outputs = onnx_specs(build_tiny_model(DIMS))
    dims = check_contract(inputs, outputs)
    assert dims == {"H": DIMS.image_h, "W": DIMS.image_w, "Z": DIMS.z, "Hb": DIMS.hb, "Wb": DIMS.wb,
                    "Cl": DIMS.lidar_channels, "C": DIMS.state_channels, "K": DIMS.classes,
                    "R": 10, "Ho": DIMS.ho, "Wo": DIMS.wo}


def test_expected_dims_from_the_model_config_are_enforced():
    inputs, outputs = onnx_specs(build_tiny_model(DIMS))
    with pytest.raises(ModelContractError, match="images"):
        check_contract(inputs, outputs, expected_dims={"H": DIMS.image_h + 1})


def test_missing_output_is_named(tmp_path):
    model = build_tiny_model(DIMS)
    kept = [o for o in model.graph.output if o.name != "box_reg"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    with pytest.raises(ModelContractError, match="no output tensor 'box_reg'"):
        create_engine(_save(model, tmp_path, "no_box.onnx"), backend="onnxruntime")


def test_missing_input_is_named():
    inputs, outputs = onnx_specs(build_tiny_model(DIMS))
    with pytest.raises(ModelContractError, match="no input tensor 'prev_valid'"):
        check_contract([s for s in inputs if s.name != "prev_valid"], outputs)


@pytest.mark.parametrize(("tensor", "axis", "value"), [
    ("camera_valid", 0, 5),        # fixed contract size (6 cameras)
    ("prev_bev", 1, DIMS.ho + 1),  # Ho inconsistent with the head outputs
    ("cam_grid", 0, DIMS.ho * 2 + 1),  # Z*Ho not a multiple of Ho
    ("bev_state", 0, DIMS.state_channels + 1),  # state channels differ from prev_bev
])
def test_mis_shaped_tensor_is_named(tmp_path, tensor, axis, value):
    model = _set_dim(build_tiny_model(DIMS), tensor, axis, value)
    with pytest.raises(ModelContractError, match=f"'{tensor}'"):
        create_engine(_save(model, tmp_path, "bad.onnx"), backend="onnxruntime")


def test_wrong_rank_is_named():
    with pytest.raises(ModelContractError, match="'ego_motion'.*rank"):
        inputs, outputs = onnx_specs(build_tiny_model(DIMS))
        check_contract([TensorSpec("ego_motion", (6,), "float32") if s.name == "ego_motion" else s
                        for s in inputs], outputs)


def test_dynamic_dimension_is_rejected_with_its_name(tmp_path):
    model = _set_dim(build_tiny_model(DIMS), "images", 0, "num_cams")
    with pytest.raises(ModelContractError, match="'images'.*num_cams"):
        onnx_specs(read_onnx(_save(model, tmp_path, "dyn.onnx")))


def test_state_dtype_mismatch_is_rejected():
    inputs, outputs = onnx_specs(build_tiny_model(DIMS))
    outputs = [TensorSpec(s.name, s.shape, "float16") if s.name == "bev_state" else s for s in outputs]
    with pytest.raises(ModelContractError, match="bev_state"):
        check_contract(inputs, outputs)


def test_extra_input_is_rejected():
    inputs, outputs = onnx_specs(build_tiny_model(DIMS))
    with pytest.raises(ModelContractError, match="timestamp"):
        check_contract([*inputs, TensorSpec("timestamp", (1,), "float32")], outputs)


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model\n" * 10, bytes(range(256)) * 4])
def test_not_an_onnx_file(tmp_path, content):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelContractError, match="garbage.onnx"):
        create_engine(path, backend="onnxruntime")


def test_missing_file(tmp_path):
    with pytest.raises(ModelContractError, match="does not exist"):
        create_engine(tmp_path / "absent.onnx", backend="onnxruntime")


@pytest.mark.parametrize(("name", "precision"), [("bev_tiny.onnx", "fp32"), ("bev_tiny.int8.onnx", "int8"),
                                                 ("bev_tiny.int8_cpu.onnx", "int8"), ("bev_v3.onnx", "fp32"),
                                                 ("bev_v3.int8.onnx", "int8"), ("bev_v3.int8_cpu.onnx", "int8"),
                                                 ("bev_v3.qat.int8.onnx", "int8"),
                                                 ("bev_v3.qat.int8_cpu.onnx", "int8")])
def test_shipped_model_matches_its_config(name, precision):
    path = MODELS / name
    cfg = model_config_for_onnx(path)
    model = read_onnx(path)
    inputs, outputs = onnx_specs(model)
    assert {s.name: s.shape for s in inputs} == cfg.input_shapes()
    assert {s.name: s.shape for s in outputs} == cfg.output_shapes()
    assert check_contract(inputs, outputs, expected_dims=cfg.symbols()) == cfg.symbols()
    assert onnx_precision(model) == precision
    assert path.stat().st_size <= 20e6
