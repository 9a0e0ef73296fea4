"""Reference BEV detector: six cameras + lidar raster + recurrent BEV state.

Batched modules for training; ``ContractWrapper`` removes the batch dimension so the
exported graph has exactly the engine I/O contract of docs/architecture.md §2. Every geometric
step is parameter-free sampling (GridSample) so the network does not depend on the
rig calibration: the pipeline supplies ``cam_grid`` and ``ego_motion``.

``network.version`` 3 (``NetworkConfig``) makes the camera branch detect on its own: the
image encoder also predicts, per pixel, a distribution over the Z height slices that
weights the lift (``height_weighted_lift``: a pixel's ray meets each slice at one ground
distance, so its height is its depth); ``lidar_valid = 0`` routes the camera BEV through
its own 1x1 path instead of the fusion conv; the temporal fusion sees ``dt`` (its state
differences scaled by 1/dt, and dt as a channel); in training an auxiliary camera-only head
gives deep supervision (not exported).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bev_quant_ros.perception.model_config import ModelConfig

REFERENCE_DT_S = 1 / 30  # the camera period: dt / REFERENCE_DT_S is 1 at 30 Hz
MIN_DT_S = 1 / 120  # floor of dt for 1/dt (dt = 0 comes only with prev_valid = 0)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    """Small from-scratch CNN shared by the six cameras (stride 2 per stage)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)
        stages, c_in = [], 3
        for c_out, convs in zip(cfg.network.image_channels, cfg.network.image_convs_per_stage):
            stages += [conv_bn_relu(c_in, c_out, stride=2)] + [conv_bn_relu(c_out, c_out) for _ in range(convs - 1)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        # v3: plus Z logits of the per-pixel height-slice distribution
        slice_logits = cfg.Z if cfg.network.version >= 3 else 0
        self.out = nn.Conv2d(c_in, cfg.network.lift_channels + slice_logits, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] 0..255 RGB -> [N, lift_channels (+ Z slice logits in v3), H/s, W/s]."""
        return self.out(self.stages((images - self.mean) * self.inv_std))


def lift_to_bev(features: torch.Tensor, cam_grid: torch.Tensor, camera_valid: torch.Tensor,
                num_slices: int) -> torch.Tensor:
    """Sample camera features at every BEV cell and height slice, from the camera canvas.

    features [B, 6, F, h, w], cam_grid [B, Z*Ho, Wo, 2] (``preprocess.camera_sampling_grid``:
    coordinates on the six feature maps laid side by side), camera_valid [B, 6]
    -> [B, F*Z, Ho, Wo]. An invalid camera's features are zeroed before sampling, so its
    pixels cannot influence the result; one GridSample over the canvas costs a sixth of
    sampling every camera at every cell.
    """
    b, n_cam, f, h, w = features.shape
    masked = features * camera_valid.reshape(b, n_cam, 1, 1, 1)
    canvas = masked.permute(0, 2, 3, 1, 4).reshape(b, f, h, n_cam * w)
    sampled = F.grid_sample(canvas, cam_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    zho, wo = cam_grid.shape[1], cam_grid.shape[2]
    return sampled.reshape(b, f * num_slices, zho // num_slices, wo)


def height_weighted_lift(features: torch.Tensor, slice_logits: torch.Tensor, cam_grid: torch.Tensor,
                         camera_valid: torch.Tensor, num_slices: int) -> torch.Tensor:
    """``lift_to_bev`` with each slice's sample weighted by the pixel's probability of lying at
    that slice's height (softmax over ``slice_logits`` [B, 6, Z, h, w]): the feature of a pixel
    lands where its ray meets the predicted height, not on every cell along the ray.

    The probabilities are sampled in the same GridSample as the features (one canvas of F + Z
    channels); slice z keeps probability channel z (a constant diagonal mask). -> [B, F*Z, Ho, Wo].
    """
    f = features.shape[2]
    probs = torch.softmax(slice_logits, dim=2)
    sampled = lift_to_bev(torch.cat([features, probs], dim=2), cam_grid, camera_valid, num_slices)
    b, _, ho, wo = sampled.shape
    sampled = sampled.reshape(b, f + num_slices, num_slices, ho, wo)
    diagonal = torch.eye(num_slices, dtype=sampled.dtype).reshape(1, num_slices, num_slices, 1, 1)
    weight = (sampled[:, f:] * diagonal).sum(dim=1, keepdim=True)  # [B, 1, Z, Ho, Wo]
    return (sampled[:, :f] * weight).reshape(b, f * num_slices, ho, wo)


def motion_features(current: torch.Tensor, warped: torch.Tensor, valid: torch.Tensor,
                    dt: torch.Tensor) -> torch.Tensor:
    """What the v3 temporal fusion adds to [current, warped]: the state difference per
    reference period (x REFERENCE_DT_S / dt, so a displacement reads as a velocity whatever
    the frame rate) and dt / REFERENCE_DT_S as a constant channel. dt [B, 1]."""
    b, _, h, w = current.shape
    dt = dt.reshape(b, 1, 1, 1)
    rate = REFERENCE_DT_S / torch.clamp(dt, min=MIN_DT_S)
    return torch.cat([(current - warped) * valid * rate, (dt / REFERENCE_DT_S).expand(b, 1, h, w)], dim=1)


class Logits(NamedTuple):
    """Training view of one frame; ``aux`` = camera-only head (heatmap logits, box_reg), v3 in training only."""

    heatmap: torch.Tensor
    box_reg: torch.Tensor
    bev_state: torch.Tensor
    aux: tuple[torch.Tensor, torch.Tensor] | None = None


def base_grid(height: int, width: int) -> torch.Tensor:
    """Homogeneous normalised cell centres [H*W, 3] (x = column, y = row), align_corners=False."""
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(height * width, 3)


def warp_bev(prev_bev: torch.Tensor, ego_motion: torch.Tensor, grid_xy1: torch.Tensor) -> torch.Tensor:
    """Resample the previous BEV state into the current ego frame.

    ego_motion [B, 2, 3] is the normalised affine of ``preprocess.ego_motion_affine``;
    grid_xy1 is ``base_grid(Ho, Wo)`` (the state grid). This equals ``F.affine_grid(ego_motion, ...,
    align_corners=False)`` written as one MatMul, because the ONNX AffineGrid op needs
    opset 20 and TensorRT-friendly opset 17 is the target.
    """
    b, _, h, w = prev_bev.shape
    grid = torch.matmul(grid_xy1, ego_motion.transpose(1, 2)).reshape(b, h, w, 2)
    return F.grid_sample(prev_bev, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class PooledSelfAttention(nn.Module):
    """Multi-head self-attention over average-pooled BEV tokens, added back upsampled.

    BEV models carry attention and it is the layer INT8 hurts most; this block keeps
    real MatMul + Softmax nodes in the graph at a cost the CPU can afford.
    """

    def __init__(self, channels: int, heads: int, pool: tuple[int, int]) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} not divisible by heads {heads}")
        self.heads, self.pool = heads, pool
        self.head_dim = channels // heads
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.scale = self.head_dim ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = F.avg_pool2d(x, self.pool)
        th, tw = tokens.shape[2], tokens.shape[3]
        qkv = self.qkv(tokens).reshape(b, 3, self.heads, self.head_dim, th * tw)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [B, heads, d, T]
        attn = torch.softmax(torch.matmul(q.transpose(2, 3), k) * self.scale, dim=-1)  # [B, h, T, T]
        out = torch.matmul(v, attn.transpose(2, 3)).reshape(b, c, th, tw)
        out = F.interpolate(self.proj(out), scale_factor=self.pool, mode="nearest")
        return x + out


def detection_head(c: int, out: int, prior_bias: float | None = None) -> nn.Sequential:
    """3x3 conv-BN-ReLU then 1x1 to ``out``; ``prior_bias``: CenterPoint's low start for a heatmap."""
    head = nn.Sequential(conv_bn_relu(c, c), nn.Conv2d(c, out, 1))
    if prior_bias is not None:
        nn.init.constant_(head[-1].bias, prior_bias)
    return head


class BEVDetector(nn.Module):
    """Batched reference network; inputs/outputs as the contract plus a batch dim."""

    TRAINING_ONLY = ("aux_heatmap_head", "aux_box_head")  # modules the exported graph does not have

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, net = cfg.C, cfg.network
        self.v3 = net.version >= 3
        self.image_encoder = ImageEncoder(cfg)
        self.camera_bev = conv_bn_relu(net.lift_channels * cfg.Z, c, kernel=1)
        # the lidar raster keeps its fine cells for the first conv, then strides to the state grid
        self.lidar_bev = nn.Sequential(conv_bn_relu(cfg.Cl, c // 2), conv_bn_relu(c // 2, c, stride=cfg.output_stride))
        self.fuse = conv_bn_relu(2 * c, c, kernel=1)
        self.register_buffer("warp_grid", base_grid(cfg.Ho, cfg.Wo), persistent=False)
        # 3x3, not 1x1: comparing each cell with its neighbours in [current, warped previous] is
        # what shows an object's displacement since the last frame (velocity); a 1x1 conv only
        # sees both at the same cell and learnt no velocity (mAVE equal with and without state)
        # v3 adds the motion features (C state differences + the dt channel)
        self.temporal = nn.Conv2d((3 * c + 1) if self.v3 else 2 * c, 2 * c, 3, padding=1)  # -> gate, value
        self.attention = PooledSelfAttention(c, net.attention_heads, net.attention_pool_hw)
        self.head_trunk = conv_bn_relu(c, c)
        # CenterPoint prior: start with a low heatmap so the focal loss is stable
        self.heatmap_head = detection_head(c, cfg.K, prior_bias=-2.19)
        self.box_head = detection_head(c, cfg.R)
        if self.v3:
            self.camera_only = conv_bn_relu(c, c, kernel=1)  # replaces the fusion when lidar_valid = 0
            self.aux_heatmap_head = detection_head(c, cfg.K, prior_bias=-2.19)  # training only
            self.aux_box_head = detection_head(c, cfg.R)

    def forward_logits(self, images: torch.Tensor, camera_valid: torch.Tensor, cam_grid: torch.Tensor,
                       lidar_bev: torch.Tensor, prev_bev: torch.Tensor, ego_motion: torch.Tensor,
                       prev_valid: torch.Tensor, dt: torch.Tensor | None = None,
                       lidar_valid: torch.Tensor | None = None) -> Logits:
        """Training view: heatmap logits (the focal loss wants them), box_reg, bev_state and, for v3
        in training mode, the camera-only head. v2 ignores ``dt`` and ``lidar_valid`` [B, 1]; v3 needs them."""
        if self.v3 and (dt is None or lidar_valid is None):
            raise ValueError("network version 3 needs the dt and lidar_valid inputs")
        b, n_cam = images.shape[:2]
        feats = self.image_encoder(images.flatten(0, 1))
        feats = feats.reshape(b, n_cam, *feats.shape[1:])
        lidar = self.lidar_bev(lidar_bev)
        if self.v3:
            f = self.cfg.network.lift_channels
            cam = self.camera_bev(height_weighted_lift(feats[:, :, :f], feats[:, :, f:], cam_grid, camera_valid,
                                                       self.cfg.Z))
            has_lidar = lidar_valid.reshape(b, 1, 1, 1)
            current = (self.fuse(torch.cat([cam, lidar * has_lidar], dim=1)) * has_lidar
                       + self.camera_only(cam) * (1 - has_lidar))
        else:
            cam = self.camera_bev(lift_to_bev(feats, cam_grid, camera_valid, self.cfg.Z))
            current = self.fuse(torch.cat([cam, lidar], dim=1))
        valid = prev_valid.reshape(b, 1, 1, 1)
        warped = warp_bev(prev_bev, ego_motion, self.warp_grid) * valid
        temporal_in = [current, warped] + ([motion_features(current, warped, valid, dt)] if self.v3 else [])
        gate_logits, value = self.temporal(torch.cat(temporal_in, dim=1)).chunk(2, dim=1)
        # tanh bounds what history adds (|state - current| < 1), so the state cannot grow over
        # long sequences and has a fixed range for INT8
        bev_state = current + torch.sigmoid(gate_logits) * valid * torch.tanh(value)
        x = self.head_trunk(self.attention(bev_state))
        aux = (self.aux_heatmap_head(cam), self.aux_box_head(cam)) if self.v3 and self.training else None
        return Logits(self.heatmap_head(x), self.box_head(x), bev_state, aux)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contract outputs (batched): sigmoid heatmap, box_reg, bev_state."""
        out = self.forward_logits(*inputs)
        return torch.sigmoid(out.heatmap), out.box_reg, out.bev_state


class ContractWrapper(nn.Module):
    """Batch-free view with the exact contract signature, for export and the engine."""

    def __init__(self, detector: BEVDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``inputs`` in ``ModelConfig.input_shapes()`` order (the contract, then the optional ones)."""
        heatmap, box_reg, bev_state = self.detector(*(t.unsqueeze(0) for t in inputs))
        return heatmap[0], box_reg[0], bev_state[0]
