"""Exact ranges of tensors derived from a bounded input (quant/bounded.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bev_quant_ros.quant.bounded import bounded_tensor_ranges

MEAN = np.array([100.0, 110.0, 120.0]).reshape(1, 3, 1, 1)
INV_STD = np.array([1 / 50.0, 1 / 60.0, 1 / 40.0]).reshape(1, 3, 1, 1)


def _model(extra_nodes: list[onnx.NodeProto], extra_inits: list[onnx.TensorProto] = ()) -> onnx.ModelProto:
    """images [6, 3, 4, 4] -> Unsqueeze -> Reshape -> Sub(mean) -> Mul(inv_std) -> Relu + extra."""
    inits = [numpy_helper.from_array(MEAN.astype(np.float32), "mean"),
             numpy_helper.from_array(INV_STD.astype(np.float32), "inv_std"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([6, 3, 4, 4], np.int64), "shape"), *extra_inits]
    nodes = [helper.make_node("Unsqueeze", ["images", "axes"], ["unsqueezed"]),
             helper.make_node("Reshape", ["unsqueezed", "shape"], ["reshaped"]),
             helper.make_node("Sub", ["reshaped", "mean"], ["centred"]),
             helper.make_node("Mul", ["centred", "inv_std"], ["normalised"]),
             helper.make_node("Relu", ["normalised"], ["relu"]), *extra_nodes]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [6, 3, 4, 4])],
                              [helper.make_tensor_value_info("relu", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph)


def test_normalised_image_range_is_exact_per_channel_bound():
    ranges = bounded_tensor_ranges(_model([]), {"images": (0.0, 255.0)})
    assert ranges["reshaped"] == (0.0, 255.0)
    assert ranges["centred"] == (-120.0, 155.0)
    low, high = ranges["normalised"]
    # per channel: (0 - 120) / 40 = -3.0 is the lowest, (255 - 120) / 40 = 3.375 the highest;
    # bounds that mixed channels ((255 - 100) / 40) would reach 3.875
    np.testing.assert_allclose([low, high], [-3.0, 3.375], rtol=1e-6)
    assert "relu" not in ranges  # a non-affine op ends the propagation
    assert "images" not in ranges


def test_unbounded_division_and_data_dependent_operands_end_the_propagation():
    divisor = numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "divisor")
    nodes = [helper.make_node("Div", ["normalised", "divisor"], ["divided"]),  # divides by zero
             helper.make_node("Add", ["normalised", "relu"], ["summed"]),  # relu is not bounded here
             helper.make_node("Div", ["normalised", "inv_std"], ["rescaled"])]
    ranges = bounded_tensor_ranges(_model(nodes, [divisor]), {"images": (0.0, 255.0)})
    assert "divided" not in ranges and "summed" not in ranges
    # channel by channel, dividing by the same constants undoes the scaling exactly
    np.testing.assert_allclose(ranges["rescaled"], (-120.0, 155.0), rtol=1e-6)
