"""Held-out evaluation of a PyTorch checkpoint, with the ablations of the model card.

Runs the network frame by frame over fresh synthetic sequences (seeds >= MIN_EVAL_SEED,
never used in training), feeding its own ``bev_state`` forward like the engine, decodes
and scores with the nuScenes metrics. Ablations: ``camera_only`` (lidar raster zeroed),
``lidar_only`` (all cameras invalid), ``no_temporal`` (prev_valid = 0 every frame). A v3
network also gets ``dt`` (the 30 Hz period, 0 without a valid state) and ``lidar_valid``
(0 in ``camera_only``), as the pipeline feeds them. ``frame_rate`` evaluates at other
rates: 15 Hz feeds every other frame of the 30 Hz sequences (the node's latest-wins slots
dropping frames), 12 Hz renders the sequences with 12 Hz cameras (a 12 Hz rig).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from bev_quant_ros.evaluation.metrics import evaluate_detections
from bev_quant_ros.model.dataset import MIN_EVAL_SEED, frame_inputs
from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.perception.box_decoding import DecodeConfig, decode
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.preprocess import camera_sampling_grid, ego_motion_affine

ABLATIONS = ("full", "camera_only", "lidar_only", "no_temporal")
# evaluated frame rate -> (camera rate of the rendered sequence, frames between fed frames)
FRAME_RATES: dict[str, tuple[float, int]] = {"30hz": (30.0, 1), "15hz": (30.0, 2), "12hz": (12.0, 1)}


def evaluate_checkpoint(net: BEVDetector, condition: str, num_sequences: int, frames_per_sequence: int,
                        ablations: tuple[str, ...] = ABLATIONS, first_seed: int = MIN_EVAL_SEED,
                        frame_rate: str = "30hz") -> dict[str, dict[str, Any]]:
    """Metrics JSON (``DetectionMetrics.to_json``) per ablation on one condition, with
    ``frames_per_sequence`` frames fed per sequence at ``frame_rate`` (a ``FRAME_RATES`` key)."""
    if first_seed < MIN_EVAL_SEED:
        raise ValueError(f"evaluation seeds must be >= {MIN_EVAL_SEED} (disjoint from training)")
    from bev_quant_ros.sim import generate_frames

    camera_rate_hz, step = FRAME_RATES[frame_rate]
    cfg = net.cfg
    rig = load_rig()
    cam_grid = torch.from_numpy(camera_sampling_grid(rig, cfg)).unsqueeze(0)
    decode_cfg = DecodeConfig(x_range_m=cfg.x_range_m, y_range_m=cfg.y_range_m, class_names=cfg.classes)
    preds: dict[str, list[Boxes3D]] = {a: [] for a in ablations}
    gts, gt_points = [], []
    net.eval()
    for seed in range(first_seed, first_seed + num_sequences):
        state = {a: torch.zeros(1, cfg.C, cfg.Ho, cfg.Wo) for a in ablations}
        prev_pose = None
        frames = generate_frames(seed, condition, frames_per_sequence * step, rig=rig, camera_rate_hz=camera_rate_hz)
        for frame in itertools.islice(frames, 0, None, step):
            images, raster = frame_inputs(frame, rig, cfg)
            motion = ego_motion_affine(prev_pose if prev_pose is not None else frame.ego_pose, frame.ego_pose, cfg)
            for ablation in ablations:
                prev_valid = 0.0 if prev_pose is None or ablation == "no_temporal" else 1.0
                inputs = [torch.from_numpy(images)[None],
                          torch.full((1, 6), 0.0 if ablation == "lidar_only" else 1.0),
                          cam_grid,
                          torch.from_numpy(raster * (0.0 if ablation == "camera_only" else 1.0))[None],
                          state[ablation], torch.from_numpy(motion)[None], torch.tensor([[prev_valid]])]
                if cfg.optional_inputs:  # v3: in ModelConfig.input_shapes() order after the contract
                    extra = {"dt": prev_valid * step / camera_rate_hz,
                             "lidar_valid": 0.0 if ablation == "camera_only" else 1.0}
                    inputs += [torch.tensor([[extra[name]]]) for name in cfg.optional_inputs]
                with torch.no_grad():
                    heatmap, box_reg, state[ablation] = net(*inputs)
                preds[ablation].append(decode(heatmap[0].numpy(), box_reg[0].numpy(), decode_cfg))
            gts.append(frame.gt)
            gt_points.append(frame.gt_num_lidar_points)
            prev_pose = frame.ego_pose
    return {a: evaluate_detections(preds[a], gts, cfg.classes, gt_num_lidar_points=gt_points).to_json()
            for a in ablations}
