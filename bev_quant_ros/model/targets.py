"""CenterPoint training targets from ground-truth boxes (numpy).

Heatmap: a Gaussian per object around its centre cell, per class, max-combined.
Regression: dense [R, Ho, Wo] with values only at centre cells (``reg_mask``), encoded
with ``decode.center_to_cell_offset`` so that decode(encode(gt)) returns the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bev_quant_ros.engine.contract import BOX_REG_CHANNELS
from bev_quant_ros.perception.box_decoding import center_to_cell_offset
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.model_config import ModelConfig

_REG = {name: i for i, name in enumerate(BOX_REG_CHANNELS)}
MIN_RADIUS_CELLS = 1
GAUSSIAN_MIN_OVERLAP = 0.1  # CenterPoint's setting


@dataclass
class DetectionTargets:
    heatmap: np.ndarray  # [K, Ho, Wo] float32 in [0, 1]
    box_reg: np.ndarray  # [R, Ho, Wo] float32, meaningful where reg_mask
    reg_mask: np.ndarray  # [Ho, Wo] float32 1 at object centre cells


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = GAUSSIAN_MIN_OVERLAP) -> float:
    """CornerNet/CenterPoint radius: the smallest of the three IoU-overlap cases."""
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def draw_gaussian(plane: np.ndarray, row: int, col: int, radius: int) -> None:
    """Max-combine a Gaussian (sigma = diameter / 6) centred on (row, col) into plane."""
    sigma = (2 * radius + 1) / 6.0
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    ho, wo = plane.shape
    r0, r1 = max(0, row - radius), min(ho, row + radius + 1)
    c0, c1 = max(0, col - radius), min(wo, col + radius + 1)
    patch = g[r0 - row + radius:r1 - row + radius, c0 - col + radius:c1 - col + radius]
    np.maximum(plane[r0:r1, c0:c1], patch, out=plane[r0:r1, c0:c1])


def encode_targets(gt: Boxes3D, cfg: ModelConfig) -> DetectionTargets:
    """Targets on the head grid [Ho, Wo]; boxes of unknown classes or off the grid are skipped."""
    heatmap = np.zeros((cfg.K, cfg.Ho, cfg.Wo), np.float32)
    box_reg = np.zeros((cfg.R, cfg.Ho, cfg.Wo), np.float32)
    reg_mask = np.zeros((cfg.Ho, cfg.Wo), np.float32)
    cells = center_to_cell_offset(cfg, cfg.Ho, cfg.Wo, gt.centers[:, 0], gt.centers[:, 1])
    cell_x, cell_y = cfg.cell_x_m * cfg.output_stride, cfg.cell_y_m * cfg.output_stride
    for i, name in enumerate(gt.class_names):
        if name not in cfg.classes or not cells.inside[i]:
            continue
        r, c = int(cells.rows[i]), int(cells.cols[i])
        length, width = gt.sizes[i, 0] / cell_x, gt.sizes[i, 1] / cell_y
        radius = max(MIN_RADIUS_CELLS, int(gaussian_radius(length, width)))
        draw_gaussian(heatmap[cfg.classes.index(name)], r, c, radius)
        box_reg[:, r, c] = (cells.offset_x[i], cells.offset_y[i], gt.centers[i, 2], *np.log(gt.sizes[i]),
                            np.sin(gt.yaws[i]), np.cos(gt.yaws[i]), *gt.velocities[i])
        reg_mask[r, c] = 1.0
    return DetectionTargets(heatmap, box_reg, reg_mask)
