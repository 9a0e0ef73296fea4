"""Start a training run from an earlier exported model (v3 from the shipped v2 ONNX).

On a 2-core CPU the fused/lidar path and the heads of v3 would spend most of a run relearning
what v2 already does; starting from v2 leaves the steps to the new camera path. Tensors of
equal shape are copied; a tensor that grew keeps the donor in its leading slice (new output
channels keep their fresh init, new input channels start at zero so they change nothing at
step 0); v3's camera-only conv starts from the camera half of the fusion conv, its auxiliary
head fresh (the main head's weights on camera-only features started worse than random). The donor's folded
BatchNorms are identities in eval mode but would renormalise by batch statistics in training
mode, which is another function; ``match_batchnorm_to_data`` re-parametrises every BN so
that its training-mode output on real frames equals its eval-mode function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.model.onnx_weights import detector_from_onnx

LOG = logging.getLogger("bev_quant_ros.train")


def copy_weights(net: BEVDetector, donor: BEVDetector) -> dict[str, list[str]]:
    """Copy ``donor``'s tensors into ``net``; returns the keys copied whole, in part, and left fresh."""
    target, source = net.state_dict(), donor.state_dict()
    report: dict[str, list[str]] = {"whole": [], "slice": [], "fresh": []}
    with torch.no_grad():
        for key, tensor in target.items():
            value = source.get(key)
            if value is not None and value.shape == tensor.shape:
                tensor.copy_(value)
                report["whole"].append(key)
            elif value is not None and value.dim() == tensor.dim() and all(
                    d <= t for d, t in zip(value.shape, tensor.shape)):
                if value.dim() == 4 and value.shape[0] == tensor.shape[0]:
                    tensor.zero_()  # grown input channels: no effect until trained
                tensor[tuple(slice(0, d) for d in value.shape)].copy_(value)
                report["slice"].append(key)
            else:
                report["fresh"].append(key)
        if net.v3 and not donor.v3:  # camera-only path: the camera half of the fusion conv
            c = net.cfg.C
            net.camera_only[0].weight.copy_(donor.fuse[0].weight[:, :c])
            net.camera_only[1].load_state_dict(donor.fuse[1].state_dict())
            report["fresh"] = [k for k in report["fresh"] if not k.startswith("camera_only.")]
            report["slice"] += ["camera_only (from fuse)"]
    return report


def match_batchnorm_to_data(net: nn.Module, forward: Callable[[], object]) -> int:
    """Give every BatchNorm that sees data the statistics of its input (one eval-mode ``forward``)
    and the affine that keeps its eval function y = a x + c: running mean/var := the data's,
    weight := a sqrt(var + eps), bias := c + a mean. Training mode then normalises by nearly
    the same statistics and computes nearly the same function. Returns the BNs changed."""
    stats: dict[nn.BatchNorm2d, list[torch.Tensor]] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach()
        stats.setdefault(module, []).append(torch.stack([x.mean(dim=(0, 2, 3)), (x * x).mean(dim=(0, 2, 3))]))

    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        was_training = net.training
        net.eval()
        with torch.no_grad():
            forward()
        net.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for bn, moments in stats.items():
            first, second = torch.stack(moments).mean(dim=0)
            mean, var = first, torch.clamp(second - first * first, min=1e-6)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            offset = bn.bias - scale * bn.running_mean
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(scale * torch.sqrt(var + bn.eps))
            bn.bias.copy_(offset + scale * mean)
    return len(stats)


def warm_start(net: BEVDetector, onnx_path: str | Path, forward_windows: Iterable[Callable[[], object]]) -> None:
    """``net`` from the FP32 ONNX model at ``onnx_path`` (same BEV grid and channels), BNs
    matched over ``forward_windows`` (callables running the network on training frames)."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ConfigError(f"train init_from: no ONNX model at {path}")
    donor = detector_from_onnx(path)
    if (donor.cfg.C, donor.cfg.Ho, donor.cfg.Wo) != (net.cfg.C, net.cfg.Ho, net.cfg.Wo):
        raise ConfigError(f"train init_from {path}: its state grid/channels differ from the trained network's")
    report = copy_weights(net, donor)
    windows = list(forward_windows)
    n_bn = match_batchnorm_to_data(net, lambda: [run() for run in windows])
    LOG.info("warm start from %s: %d tensors copied whole, %d in part, %d fresh; %d BatchNorms matched to "
             "%d windows", path, len(report["whole"]), len(report["slice"]), len(report["fresh"]), n_bn,
             len(windows))
