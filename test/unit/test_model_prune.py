"""Channel pruning: a network whose dropped channels carry nothing computes the same function pruned."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.model.prune import prune_detector, pruned_config
from bev_quant_ros.perception.model_config import example_inputs
from tiny_model import tiny_config

TINY = dataclasses.replace(tiny_config(), C=16)
TINY_V3 = dataclasses.replace(TINY, network=dataclasses.replace(TINY.network, version=3),
                              optional_inputs=("dt", "lidar_valid"))


def _kill(module: nn.Module, channels: torch.Tensor) -> None:
    """Output ``channels`` of a conv_bn_relu (BN gamma, beta 0 -> 0 after ReLU) or a bare conv (rows 0)."""
    with torch.no_grad():
        if isinstance(module, nn.Conv2d):
            module.weight[channels] = 0
            if module.bias is not None:
                module.bias[channels] = 0
        else:
            module[1].weight[channels] = 0
            module[1].bias[channels] = 0


def _odd(n: int) -> torch.Tensor:
    return torch.arange(1, n, 2)


def _dead_half_network(cfg) -> tuple[BEVDetector, torch.Tensor]:
    """A random network whose odd channels (every prunable group) are dead; -> (net, kept state channels)."""
    torch.manual_seed(0)
    net = BEVDetector(cfg).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    c = cfg.C
    for stage in net.image_encoder.stages:
        _kill(stage, _odd(stage[0].out_channels))
    for name in ["camera_bev", "lidar_bev.1", "fuse"] + (["camera_only"] if net.v3 else []):
        _kill(net.get_submodule(name), _odd(c))
    _kill(net.lidar_bev[0], _odd(c // 2))
    _kill(net.temporal, _odd(c) + c)  # value half: the update adds tanh(0) = 0 there
    att = net.attention
    # query/key: the odd channels of each head; value: the upper half of each head (another pattern)
    upper = torch.cat([h * att.head_dim + torch.arange(att.head_dim // 2, att.head_dim) for h in range(att.heads)])
    _kill(att.qkv, torch.cat([_odd(c), _odd(c) + c, upper + 2 * c]))
    _kill(att.proj, _odd(c))
    for name in ["head_trunk", "heatmap_head.0", "box_head.0"]:
        _kill(net.get_submodule(name), _odd(c))
    return net, torch.arange(0, c, 2)


@pytest.mark.parametrize("cfg", [TINY, TINY_V3], ids=["v2", "v3"])
def test_pruning_dead_channels_keeps_the_function(cfg):
    net, kept = _dead_half_network(cfg)
    pruned = prune_detector(net, 0.5)
    assert pruned.cfg == pruned_config(cfg, 0.5) and pruned.cfg.C == cfg.C // 2
    inputs = [torch.from_numpy(v).unsqueeze(0) for v in example_inputs(cfg, seed=3).values()]
    state = torch.randn(1, cfg.C, cfg.Ho, cfg.Wo)
    state[:, 1::2] = 0  # the dead channels' state is zero (the network never writes them)
    state_index = list(example_inputs(cfg)).index("prev_bev")
    inputs[state_index] = state
    small = list(inputs)
    small[state_index] = state[:, kept]
    with torch.no_grad():
        heatmap, box_reg, bev_state = net(*inputs)
        p_heatmap, p_box_reg, p_bev_state = pruned(*small)
    np.testing.assert_allclose(p_heatmap, heatmap, atol=1e-5)
    np.testing.assert_allclose(p_box_reg, box_reg, atol=1e-4)
    np.testing.assert_allclose(p_bev_state, bev_state[:, kept], atol=1e-5)
    assert not bev_state[:, 1::2].any()


def test_pruned_config_keeps_widths_divisible():
    cfg = pruned_config(tiny_config(), 0.5)
    assert cfg.C % (2 * cfg.network.attention_heads) == 0
    assert cfg.network.image_channels == tuple(w // 2 for w in tiny_config().network.image_channels)
    with pytest.raises(ValueError, match="keep ratio"):
        pruned_config(cfg, 0.0)


def test_halved_tokens_pool_twice_the_columns_and_keep_the_weights():
    net, _ = _dead_half_network(TINY)
    rows, cols = TINY.network.attention_pool_hw
    halved = prune_detector(net, 0.5, halve_tokens=True)
    assert halved.cfg.network.attention_pool_hw == (rows, 2 * cols) and halved.cfg.name.endswith("_t50")
    plain = prune_detector(net, 0.5)
    same = {k: torch.equal(v, halved.state_dict()[k]) for k, v in plain.state_dict().items()}
    assert all(same.values())  # pooling has no weights: only the token grid differs
    inputs = [torch.from_numpy(v).unsqueeze(0) for v in example_inputs(halved.cfg, seed=3).values()]
    with torch.no_grad():
        assert not torch.equal(plain(*inputs)[1], halved(*inputs)[1])  # the attention feeds the head
