"""ONNX export: exact contract names/shapes, attention nodes present, ORT == PyTorch."""

from __future__ import annotations

import dataclasses

import onnx
import pytest
import torch

from bev_quant_ros.engine.contract import CONTRACT_INPUTS, CONTRACT_OUTPUTS
from bev_quant_ros.errors import ConfigError, ModelContractError
from bev_quant_ros.model.export import MAX_ABS_DIFF, OPSET, check_contract, compare_with_torch, export_onnx
from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.perception.model_config import example_inputs, model_config_for_onnx
from tiny_model import tiny_config

TINY = tiny_config()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = BEVDetector(TINY).eval()
    path = export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return net, path


def test_onnx_io_names_and_shapes_equal_resolved_contract(exported):
    _, path = exported
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == list(CONTRACT_INPUTS)
    assert [o.name for o in model.graph.output] == list(CONTRACT_OUTPUTS)
    resolved = {**TINY.input_shapes(), **TINY.output_shapes()}
    for vi in [*model.graph.input, *model.graph.output]:
        assert tuple(d.dim_value for d in vi.type.tensor_type.shape.dim) == resolved[vi.name]
    assert resolved["cam_grid"] == (TINY.Z * 16, 16, 2) and resolved["prev_bev"] == (TINY.C, 16, 16)
    assert resolved["heatmap"] == (5, 16, 16)
    assert model.opset_import[0].version == OPSET
    check_contract(path, TINY)
    # the config written next to the model round-trips
    assert model_config_for_onnx(path) == TINY


def test_graph_keeps_attention_and_in_graph_warp(exported):
    ops = [n.op_type for n in onnx.load(exported[1]).graph.node]
    assert ops.count("Softmax") == 1
    assert ops.count("MatMul") >= 3  # q.k, attn.v and the warp grid
    assert ops.count("GridSample") == 2  # camera lift and state warp


def test_onnx_runtime_matches_pytorch(exported):
    net, path = exported
    inputs = example_inputs(TINY, seed=3)
    inputs["camera_valid"][1] = 0.0
    diffs = compare_with_torch(net, path, inputs)
    assert set(diffs) == set(CONTRACT_OUTPUTS)
    assert max(diffs.values()) <= MAX_ABS_DIFF


def test_contract_check_rejects_other_config(exported):
    other = dataclasses.replace(TINY, C=16)
    with pytest.raises(ModelContractError, match="prev_bev"):
        check_contract(exported[1], other)


def test_model_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="output_stride"):
        dataclasses.replace(TINY, output_stride=3)
    with pytest.raises(ConfigError, match="classes"):
        dataclasses.replace(TINY, classes=("car", "spaceship"))



def test_v3_exports_with_dt_and_lidar_valid_matching_pytorch_without_the_aux_head(tmp_path):
    cfg = dataclasses.replace(TINY, network=dataclasses.replace(TINY.network, version=3),
                              optional_inputs=("dt", "lidar_valid"))
    torch.manual_seed(0)
    net = BEVDetector(cfg).eval()
    path = export_onnx(net, tmp_path / "v3.onnx")
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == [*CONTRACT_INPUTS, "dt", "lidar_valid"]
    assert [o.name for o in model.graph.output] == list(CONTRACT_OUTPUTS)
    assert model.opset_import[0].version == OPSET
    assert not [i.name for i in model.graph.initializer if "aux" in i.name]  # training-only head not exported
    assert [n.op_type for n in model.graph.node].count("GridSample") == 2  # one lift, one warp, as in v2
    check_contract(path, cfg)
    assert model_config_for_onnx(path) == cfg
    for dt, lidar_valid in ((1 / 30, 1.0), (0.1, 0.0)):
        inputs = example_inputs(cfg, seed=4)
        inputs["dt"][:], inputs["lidar_valid"][:] = dt, lidar_valid
        assert max(compare_with_torch(net, path, inputs).values()) <= MAX_ABS_DIFF
