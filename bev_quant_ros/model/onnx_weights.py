"""Rebuild the PyTorch ``BEVDetector`` from an exported FP32 ONNX file (no checkpoint needed).

The shipped ``models/bev_tiny.onnx`` is committed but its training checkpoint is not (it lives
in the git-ignored ``.cache/``). The TorchScript exporter folds each BatchNorm into the
preceding conv in eval mode, so every Conv node of the graph holds a weight and a bias. The
loader maps each Conv node to its module by the node's scope name (``/detector/lidar_bev/
lidar_bev.1/lidar_bev.1.0/Conv`` -> ``lidar_bev.1.0``), copies the folded weight there and
makes the following BatchNorm an exact identity plus that bias (running mean 0, variance
1 - eps, scale 1). The network then computes the ONNX graph's function and, re-exported,
folds back to the same Conv weights.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from bev_quant_ros.errors import ModelContractError
from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.perception.model_config import model_config_for_onnx

ROOT_SCOPE = "detector"  # ContractWrapper's attribute: every module scope starts with it


def module_name_of(node_name: str) -> str:
    """The ``BEVDetector`` module path of an exported node (``""``: the detector's own forward).

    TorchScript scopes repeat the parent's name with the child's index appended
    (``stages/stages.0/stages.0.0``); such a component replaces the previous one.
    """
    parts = [p for p in node_name.split("/") if p][:-1]  # the last part is the op
    if not parts or parts[0] != ROOT_SCOPE:
        raise ModelContractError(f"node '{node_name}' is not under /{ROOT_SCOPE}/")
    path: list[str] = []
    for part in parts[1:]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def _batchnorm_after(net: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm that follows ``conv_name`` in its ``conv_bn_relu`` Sequential, if any."""
    parent_name, _, index = conv_name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    if isinstance(parent, nn.Sequential) and index.isdigit() and int(index) + 1 < len(parent):
        follower = parent[int(index) + 1]
        if isinstance(follower, nn.BatchNorm2d):
            return follower
    return None


def load_state_from_onnx(net: BEVDetector, onnx_path: str | Path) -> None:
    """Copy the ONNX graph's conv weights into ``net`` (same config); every conv must be matched
    except the training-only ones (``BEVDetector.TRAINING_ONLY``), which keep their init."""
    model = onnx.load(str(onnx_path))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:  # the exporter shares equal tensors through Constant/Identity nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    convs = {name for name, m in net.named_modules()
             if isinstance(m, nn.Conv2d) and name.split(".")[0] not in BEVDetector.TRAINING_ONLY}
    seen: set[str] = set()
    with torch.no_grad():
        for node in model.graph.node:
            if node.op_type != "Conv":
                continue
            name = module_name_of(node.name)
            conv = net.get_submodule(name) if name in convs else None
            if conv is None:
                raise ModelContractError(f"Conv node '{node.name}' has no conv module '{name}' in the network")
            weight = torch.from_numpy(weights[node.input[1]].copy())
            bias = torch.from_numpy(weights[node.input[2]].copy()) if len(node.input) > 2 else None
            if weight.shape != conv.weight.shape:
                raise ModelContractError(f"{node.name}: weight {tuple(weight.shape)} vs module "
                                         f"{tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            bn = _batchnorm_after(net, name)
            if bn is not None:  # folded: the BN becomes identity + the folded bias
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias if bias is not None else torch.zeros_like(bn.bias))
            elif conv.bias is not None and bias is not None:
                conv.bias.copy_(bias)
            seen.add(name)
    missing = sorted(convs - seen)
    if missing:
        raise ModelContractError(f"{onnx_path}: no Conv node for module(s) {missing}")


def detector_from_onnx(onnx_path: str | Path) -> BEVDetector:
    """The network (eval mode) whose function is the FP32 ONNX file's, with its model config."""
    net = BEVDetector(model_config_for_onnx(onnx_path))
    load_state_from_onnx(net, onnx_path)
    return net.eval()
