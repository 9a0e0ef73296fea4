"""Structured channel pruning of the reference network before quantization (issue 16).

Why: the edge target needs 30 FPS; removing channels shrinks every conv of the image encoder
and the BEV trunk (the work scales with in x out channels), and INT8 then multiplies the
gain. A pruned network is an ordinary ``BEVDetector`` of a narrower config (same engine
contract except the state width C), so training, export, calibration and the node run it
unchanged.

Criterion (per output channel): L1 norm of the conv filter times the following BatchNorm's
|gamma| / sqrt(var + eps), i.e. the magnitude of the channel after folding, which works the
same on a checkpoint and on a network rebuilt from a BN-folded ONNX file. Channels tied by a
residual or an element-wise sum (the state width C: lift, lidar, fusion, temporal update,
attention residual) are kept or dropped together, ranked by the summed, per-layer normalised
importance of the layers producing them. Attention keeps, per head, the query/key channels
with the largest joint norm and the value channels with the largest norm times the output
projection's use of them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.perception.model_config import ModelConfig

Index = torch.Tensor  # 1-D long tensor of kept channel indices, ascending


def pruned_config(cfg: ModelConfig, keep: float, halve_tokens: bool = False) -> ModelConfig:
    """``cfg`` with image encoder widths and the state width C scaled by ``keep`` (C stays a
    multiple of 2 x the attention heads, so heads and the lidar branch's C/2 divide it);
    ``halve_tokens``: attention tokens pooled over twice the columns (half the queries, a quarter
    of the attention matrix; pooling has no weights, so nothing else changes)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep}")
    unit = 2 * cfg.network.attention_heads
    c = max(unit, int(round(cfg.C * keep / unit)) * unit)
    image = tuple(max(1, int(round(w * keep))) for w in cfg.network.image_channels)
    rows, cols = cfg.network.attention_pool_hw
    pool = (rows, 2 * cols) if halve_tokens else cfg.network.attention_pool
    name = f"{cfg.name}_p{round(keep * 100)}" + ("_t50" if halve_tokens else "")
    return dataclasses.replace(cfg, name=name, C=c,
                               network=dataclasses.replace(cfg.network, image_channels=image, attention_pool=pool))


def channel_importance(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """|output channel| after folding ``bn`` into ``conv``: filter L1 norm x |gamma| / std."""
    norm = conv.weight.detach().abs().flatten(1).sum(dim=1)
    if bn is None:
        return norm
    return norm * (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps))


def _conv_bn_of(module: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """A ``conv_bn_relu`` Sequential -> (conv, bn); a bare conv -> (conv, None)."""
    return (module, None) if isinstance(module, nn.Conv2d) else (module[0], module[1])


def _importance(net: nn.Module, name: str) -> torch.Tensor:
    return channel_importance(*_conv_bn_of(net.get_submodule(name)))


def top(scores: torch.Tensor, count: int) -> Index:
    return torch.sort(torch.topk(scores, count).indices).values


def _copy(dst: nn.Module, src: nn.Module, out_idx: Index | None, in_idx: Index | None) -> None:
    """Copy ``src`` (conv or conv_bn_relu) into ``dst`` keeping the given output/input channels."""
    (dc, dbn), (sc, sbn) = _conv_bn_of(dst), _conv_bn_of(src)
    out_idx = torch.arange(sc.out_channels) if out_idx is None else out_idx
    in_idx = torch.arange(sc.in_channels) if in_idx is None else in_idx
    with torch.no_grad():
        dc.weight.copy_(sc.weight[out_idx][:, in_idx])
        if sc.bias is not None:
            dc.bias.copy_(sc.bias[out_idx])
        if sbn is not None:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(dbn, attr).copy_(getattr(sbn, attr)[out_idx])


def state_channels(net: BEVDetector, count: int) -> Index:
    """The C channels kept together (everything added to or fused with the BEV state)."""
    producers = ["camera_bev", "lidar_bev.1", "fuse"] + (["camera_only"] if net.v3 else [])
    total = torch.zeros(net.cfg.C)
    for name in producers:
        score = _importance(net, name)
        total += score / score.mean().clamp(min=1e-12)
    return top(total, count)


def attention_channels(net: BEVDetector, head_dim: int) -> tuple[Index, Index]:
    """(query/key, value) channels kept per head, as indices into one of q, k, v (C channels)."""
    att, c = net.attention, net.cfg.C
    rows = att.qkv.weight.detach().abs().flatten(1).sum(dim=1)
    q_norm, k_norm, v_norm = rows[:c], rows[c:2 * c], rows[2 * c:]
    v_use = att.proj.weight.detach().abs().sum(dim=(0, 2, 3))  # how much the projection reads each v channel
    qk, v = [], []
    for h in range(att.heads):
        span = slice(h * att.head_dim, (h + 1) * att.head_dim)
        qk.append(top(q_norm[span] * k_norm[span], head_dim) + h * att.head_dim)
        v.append(top(v_norm[span] * v_use[span], head_dim) + h * att.head_dim)
    return torch.cat(qk), torch.cat(v)


def prune_detector(net: BEVDetector, keep: float, halve_tokens: bool = False) -> BEVDetector:
    """A narrower ``BEVDetector`` holding ``net``'s most important channels (eval mode)."""
    cfg = pruned_config(net.cfg, keep, halve_tokens)
    out = BEVDetector(cfg)
    c_old = net.cfg.C
    state = state_channels(net, cfg.C)
    # image encoder: a chain without residuals, every conv ranked on its own
    prev: Index | None = None
    for src, dst in zip(net.image_encoder.stages, out.image_encoder.stages):
        kept = top(channel_importance(*_conv_bn_of(src)), _conv_bn_of(dst)[0].out_channels)
        _copy(dst, src, kept, prev)
        prev = kept
    _copy(out.image_encoder.out, net.image_encoder.out, None, prev)
    _copy(out.camera_bev, net.camera_bev, state, None)
    lidar0 = top(_importance(net, "lidar_bev.0"), cfg.C // 2)
    _copy(out.lidar_bev[0], net.lidar_bev[0], lidar0, None)
    _copy(out.lidar_bev[1], net.lidar_bev[1], state, lidar0)
    _copy(out.fuse, net.fuse, state, torch.cat([state, state + c_old]))
    temporal_in = [state, state + c_old] + ([state + 2 * c_old, torch.tensor([3 * c_old])] if net.v3 else [])
    _copy(out.temporal, net.temporal, torch.cat([state, state + c_old]), torch.cat(temporal_in))
    qk, v = attention_channels(net, cfg.C // cfg.network.attention_heads)
    _copy(out.attention.qkv, net.attention.qkv, torch.cat([qk, qk + c_old, v + 2 * c_old]), state)
    _copy(out.attention.proj, net.attention.proj, state, v)
    trunk = top(_importance(net, "head_trunk"), cfg.C)
    _copy(out.head_trunk, net.head_trunk, trunk, state)
    heads = [("heatmap_head", trunk), ("box_head", trunk)]
    if net.v3:
        _copy(out.camera_only, net.camera_only, state, state)
        heads += [("aux_heatmap_head", state), ("aux_box_head", state)]
    for name, head_in in heads:
        src, dst = net.get_submodule(name), out.get_submodule(name)
        hidden = top(channel_importance(*_conv_bn_of(src[0])), cfg.C)
        _copy(dst[0], src[0], hidden, head_in)
        _copy(dst[1], src[1], None, hidden)
    return out.eval()
