"""Warm start of v3 from a v2 ONNX model: what is copied, and BatchNorms that keep their function."""

from __future__ import annotations

import copy
import dataclasses

import torch

from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.model.onnx_weights import detector_from_onnx
from bev_quant_ros.model.warm_start import copy_weights, match_batchnorm_to_data, warm_start
from bev_quant_ros.perception.model_config import example_inputs
from tiny_model import tiny_config

TINY = tiny_config()
TINY_V3 = dataclasses.replace(TINY, network=dataclasses.replace(TINY.network, version=3),
                              optional_inputs=("dt", "lidar_valid"))


def _batch(cfg, seeds=(0, 1, 2, 3)) -> list[torch.Tensor]:
    rows = [list(example_inputs(cfg, seed=s).values()) for s in seeds]
    return [torch.stack([torch.from_numpy(r[i]) for r in rows]) for i in range(len(rows[0]))]


def test_v3_takes_v2_weights_whole_or_as_leading_slice_and_grown_inputs_start_at_zero(tiny_network_path):
    donor = detector_from_onnx(tiny_network_path)
    torch.manual_seed(0)
    net = BEVDetector(TINY_V3)
    fresh_logits = net.image_encoder.out.weight[TINY.network.lift_channels:].clone()
    report = copy_weights(net, donor)
    d, n, c = donor.state_dict(), net.state_dict(), TINY.C
    assert all(torch.equal(n[k], d[k]) for k in report["whole"]) and len(report["whole"]) > 20
    # temporal conv: [current, warped] columns from v2, the motion + dt columns zero
    assert torch.equal(n["temporal.weight"][:, :2 * c], d["temporal.weight"])
    assert not n["temporal.weight"][:, 2 * c:].any()
    # image encoder output: v2's lift features first, the new slice logits keep their init
    assert torch.equal(n["image_encoder.out.weight"][:TINY.network.lift_channels], d["image_encoder.out.weight"])
    assert torch.equal(n["image_encoder.out.weight"][TINY.network.lift_channels:], fresh_logits)
    assert torch.equal(n["camera_only.0.weight"], d["fuse.0.weight"][:, :c])
    assert {k.split(".")[0] for k in report["fresh"]} == {"aux_heatmap_head", "aux_box_head"}


def test_matched_batchnorms_keep_the_eval_function_and_training_mode_nearly_computes_it(tiny_network_path):
    net = detector_from_onnx(tiny_network_path)
    inputs = _batch(TINY)
    with torch.no_grad():
        before = net.eval()(*inputs)[0]
        unmatched_train = copy.deepcopy(net).train()(*inputs)[0]  # training mode moves running stats
        assert match_batchnorm_to_data(net, lambda: net(*inputs)) == sum(
            isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        after = net.eval()(*inputs)[0]
        matched_train = copy.deepcopy(net).train()(*inputs)[0]
    assert torch.allclose(before, after, atol=1e-5)
    # on the statistics' own batch, training mode is the eval function (up to var clamping)
    assert (matched_train - before).abs().max() < 1e-3 < (unmatched_train - before).abs().max()


def test_warm_start_refuses_a_donor_of_another_state_grid(tiny_network_path, tmp_path):
    import pytest

    from bev_quant_ros.errors import ConfigError

    other = BEVDetector(dataclasses.replace(TINY_V3, C=16))
    with pytest.raises(ConfigError, match="state grid/channels differ"):
        warm_start(other, tiny_network_path, [])
    with pytest.raises(ConfigError, match="no ONNX model"):
        warm_start(other, tmp_path / "missing.onnx", [])


def test_v3_warm_starts_from_its_own_export_and_keeps_its_function(tmp_path):
    """A second training stage starts from the first stage's ONNX, whose graph has no auxiliary
    camera-only head (training only): loading it no longer fails, and the function is kept."""
    from bev_quant_ros.model.export import export_onnx

    torch.manual_seed(1)
    first = BEVDetector(TINY_V3).eval()
    path = export_onnx(first, tmp_path / "stage1.onnx", example_inputs(TINY_V3))
    torch.manual_seed(2)
    second = BEVDetector(TINY_V3)
    inputs = _batch(TINY_V3)
    warm_start(second, path, [lambda: second(*inputs)])
    with torch.no_grad():
        expected, got = first(*inputs), second.eval()(*inputs)
    assert all(torch.allclose(e, g, atol=1e-4) for e, g in zip(expected, got))
    report = copy_weights(BEVDetector(TINY_V3), detector_from_onnx(path))
    assert not report["slice"] and not report["fresh"]
