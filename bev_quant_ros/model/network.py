"""Reference BEV detector: six cameras + lidar raster + recurrent BEV state.

Batched modules for training; ``ContractWrapper`` removes the batch dimension so the
exported graph has exactly the engine I/O contract of docs/architecture.md §2. Every geometric
step is parameter-free sampling (GridSample) so the network does not depend on the
rig calibration: the pipeline supplies ``cam_grid`` and ``ego_motion``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bev_quant_ros.perception.model_config import ModelConfig


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
        self.out = nn.Conv2d(c_in, cfg.network.lift_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] 0..255 RGB -> [N, lift_channels, H/s, W/s]."""
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

    def __init__(self, channels: int, heads: int, pool: int) -> None:
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


class BEVDetector(nn.Module):
    """Batched reference network; inputs/outputs as the contract plus a batch dim."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, net = cfg.C, cfg.network
        self.image_encoder = ImageEncoder(cfg)
        self.camera_bev = conv_bn_relu(net.lift_channels * cfg.Z, c, kernel=1)
        # the lidar raster keeps its fine cells for the first conv, then strides to the state grid
        self.lidar_bev = nn.Sequential(conv_bn_relu(cfg.Cl, c // 2), conv_bn_relu(c // 2, c, stride=cfg.output_stride))
        self.fuse = conv_bn_relu(2 * c, c, kernel=1)
        self.register_buffer("warp_grid", base_grid(cfg.Ho, cfg.Wo), persistent=False)
        # 3x3, not 1x1: comparing each cell with its neighbours in [current, warped previous] is
        # what shows an object's displacement since the last frame (velocity); a 1x1 conv only
        # sees both at the same cell and learnt no velocity (mAVE equal with and without state)
        self.temporal = nn.Conv2d(2 * c, 2 * c, 3, padding=1)  # -> gate logits and value
        self.attention = PooledSelfAttention(c, net.attention_heads, net.attention_pool)
        self.head_trunk = conv_bn_relu(c, c)
        self.heatmap_head = nn.Sequential(conv_bn_relu(c, c), nn.Conv2d(c, cfg.K, 1))
        self.box_head = nn.Sequential(conv_bn_relu(c, c), nn.Conv2d(c, cfg.R, 1))
        # CenterPoint prior: start with a low heatmap so the focal loss is stable
        nn.init.constant_(self.heatmap_head[-1].bias, -2.19)

    def forward_logits(self, images: torch.Tensor, camera_valid: torch.Tensor, cam_grid: torch.Tensor,
                       lidar_bev: torch.Tensor, prev_bev: torch.Tensor, ego_motion: torch.Tensor,
                       prev_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training view: heatmap logits (the focal loss wants them), box_reg, bev_state."""
        b, n_cam = images.shape[:2]
        feats = self.image_encoder(images.flatten(0, 1))
        feats = feats.reshape(b, n_cam, *feats.shape[1:])
        cam = self.camera_bev(lift_to_bev(feats, cam_grid, camera_valid, self.cfg.Z))
        current = self.fuse(torch.cat([cam, self.lidar_bev(lidar_bev)], dim=1))
        valid = prev_valid.reshape(b, 1, 1, 1)
        warped = warp_bev(prev_bev, ego_motion, self.warp_grid) * valid
        gate_logits, value = self.temporal(torch.cat([current, warped], dim=1)).chunk(2, dim=1)
        # tanh bounds what history adds (|state - current| < 1), so the state cannot grow over
        # long sequences and has a fixed range for INT8
        bev_state = current + torch.sigmoid(gate_logits) * valid * torch.tanh(value)
        x = self.head_trunk(self.attention(bev_state))
        return self.heatmap_head(x), self.box_head(x), bev_state

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contract outputs (batched): sigmoid heatmap, box_reg, bev_state."""
        logits, box_reg, bev_state = self.forward_logits(*inputs)
        return torch.sigmoid(logits), box_reg, bev_state


class ContractWrapper(nn.Module):
    """Batch-free view with the exact contract signature, for export and the engine."""

    def __init__(self, detector: BEVDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, camera_valid: torch.Tensor, cam_grid: torch.Tensor,
                lidar_bev: torch.Tensor, prev_bev: torch.Tensor, ego_motion: torch.Tensor,
                prev_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heatmap, box_reg, bev_state = self.detector(
            images.unsqueeze(0), camera_valid.unsqueeze(0), cam_grid.unsqueeze(0), lidar_bev.unsqueeze(0),
            prev_bev.unsqueeze(0), ego_motion.unsqueeze(0), prev_valid.unsqueeze(0))
        return heatmap[0], box_reg[0], bev_state[0]
