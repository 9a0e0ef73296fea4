"""CenterPoint losses: Gaussian focal loss on the heatmap, weighted L1 at centre cells."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bev_quant_ros.engine.contract import BOX_REG_CHANNELS

# CenterPoint's nuScenes code weights: velocity errors count less than geometry
REG_CHANNEL_WEIGHTS = {"vel_x": 0.2, "vel_y": 0.2}
REG_LOSS_WEIGHT = 0.25
# deep supervision of the v3 camera-only head: the camera BEV must find objects on its own
AUX_LOSS_WEIGHT = 0.5


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                        beta: float = 4.0) -> torch.Tensor:
    """CornerNet focal loss, normalised by the number of object centres (target == 1)."""
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos = target.eq(1).float()
    pos_loss = -(log_p * (1 - p) ** alpha * pos).sum()
    neg_loss = -(log_not_p * p ** alpha * (1 - target) ** beta * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted L1 over box_reg channels at centre cells; pred/target [B, R, Ho, Wo], mask [B, Ho, Wo]."""
    weights = torch.tensor([REG_CHANNEL_WEIGHTS.get(name, 1.0) for name in BOX_REG_CHANNELS],
                           dtype=pred.dtype, device=pred.device).view(1, -1, 1, 1)
    l1 = (pred - target).abs() * weights * mask.unsqueeze(1)
    return l1.sum() / mask.sum().clamp(min=1.0)


def detection_loss(heat_logits: torch.Tensor, box_reg: torch.Tensor, heat_target: torch.Tensor,
                   reg_target: torch.Tensor, reg_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (for logging)."""
    focal = gaussian_focal_loss(heat_logits, heat_target)
    reg = regression_loss(box_reg, reg_target, reg_mask)
    total = focal + REG_LOSS_WEIGHT * reg
    return total, {"focal": float(focal.detach()), "reg": float(reg.detach())}
