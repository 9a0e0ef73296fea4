"""Training sequences: synthetic frames preprocessed once into compact arrays, cached on disk.

A sequence is consecutive frames of one (seed, condition) drive; the recurrent state is
trained by running the model over the frames in order. Everything the model needs is
stored per frame at model resolution (uint8 images, float16 rasters and targets), so a
training run never renders twice. Training seeds must stay below ``MAX_TRAIN_SEED``;
held-out evaluation uses seeds >= ``MIN_EVAL_SEED``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.targets import encode_targets
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import Rig
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.preprocess import ego_motion_affine, lidar_bev, prepare_images

MAX_TRAIN_SEED = 10_000
MIN_EVAL_SEED = 100_000
NS_PER_S = 1e9
# the per-frame arrays of a Sequence (first axis = frame), the keys of a cached .npz
FRAME_FIELDS = ("images", "lidar_bev", "ego_motion", "heatmap", "box_reg", "reg_mask")


@dataclass(frozen=True)
class SequenceSpec:
    seed: int
    condition: str
    num_frames: int


@dataclass
class Sequence:
    """T frames of model inputs and targets (first axis = frame)."""

    images: np.ndarray  # [T, 6, 3, H, W] uint8
    lidar_bev: np.ndarray  # [T, Cl, Hb, Wb] float16
    ego_motion: np.ndarray  # [T, 2, 3] float32, previous frame -> this frame (identity at t=0)
    heatmap: np.ndarray  # [T, K, Ho, Wo] float16
    box_reg: np.ndarray  # [T, R, Ho, Wo] float32
    reg_mask: np.ndarray  # [T, Ho, Wo] uint8
    # recorded drives only (model/drive_data.py); None on simulated sequences = every camera, the training rig
    camera_valid: np.ndarray | None = None  # [T, 6] uint8: 0 = the camera was missing in that frame
    cam_grid: np.ndarray | None = None  # [Z*Ho, Wo, 2] float32 from the drive's own rig

    def __len__(self) -> int:
        return self.images.shape[0]


def frame_inputs(frame, rig: Rig, cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame model inputs from a sim.SimFrame: images [6,3,H,W] float32, lidar_bev [Cl,Hb,Wb]."""
    images = prepare_images(frame.images, cfg)
    dt_s = (frame.stamp_ns - frame.lidar_stamp_ns) / NS_PER_S
    raster = lidar_bev(frame.points, rig.T_ego_lidar, frame.lidar_ego_pose, frame.ego_pose, dt_s, cfg,
                       ego_velocity_xy_yawrate=_velocity_xy_yawrate(frame.ego_velocity))
    return images, raster


def _velocity_xy_yawrate(ego_velocity) -> np.ndarray | None:
    """(vx, vy, 0) from a SimFrame's ego-frame velocity; used only when sweep and camera stamps coincide."""
    if ego_velocity is None:
        return None
    v = np.asarray(ego_velocity, dtype=np.float64).ravel()
    return np.array([v[0], v[1], 0.0])


def observable_gt(frame) -> Boxes3D:
    """GT boxes some sensor saw (lidar returns or camera pixels): training on fully hidden
    objects would teach the network to hallucinate."""
    seen = (np.asarray(frame.gt_num_lidar_points) > 0) | np.asarray(frame.gt_visible_cameras).any(axis=1)
    return frame.gt.select(seen)


def render_sequence(spec: SequenceSpec, rig: Rig, cfg: ModelConfig) -> Sequence:
    """Generate and preprocess one sequence (slow: renders every camera)."""
    from bev_quant_ros.sim import generate_frames  # heavy import, only needed on a cache miss

    if not 0 <= spec.seed < MAX_TRAIN_SEED:
        raise ConfigError(f"training seed {spec.seed} outside [0, {MAX_TRAIN_SEED}): "
                          f"evaluation seeds (>= {MIN_EVAL_SEED}) must stay unseen")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FRAME_FIELDS}
    prev_pose = None
    for frame in generate_frames(spec.seed, spec.condition, spec.num_frames, rig=rig):
        images, raster = frame_inputs(frame, rig, cfg)
        motion = ego_motion_affine(prev_pose if prev_pose is not None else frame.ego_pose, frame.ego_pose, cfg)
        prev_pose = frame.ego_pose
        for k, v in frame_arrays(images, raster, motion, observable_gt(frame), cfg).items():
            parts[k].append(v)
    return Sequence(**{k: np.stack(v) for k, v in parts.items()})


def frame_arrays(images: np.ndarray, raster: np.ndarray, motion: np.ndarray, gt: Boxes3D,
                 cfg: ModelConfig) -> dict[str, np.ndarray]:
    """One frame's ``FRAME_FIELDS`` in their stored (compact) dtypes, targets encoded from ``gt``."""
    targets = encode_targets(gt, cfg)
    return {"images": np.rint(images).astype(np.uint8), "lidar_bev": raster.astype(np.float16),
            "ego_motion": motion, "heatmap": targets.heatmap.astype(np.float16), "box_reg": targets.box_reg,
            "reg_mask": targets.reg_mask.astype(np.uint8)}


def compose_ego_motion(motions: np.ndarray) -> np.ndarray:
    """The ``ego_motion`` [2, 3] from frame i to frame j of the per-frame motions of frames
    i+1..j ([j-i, 2, 3], each from its previous frame): training windows with steps of
    several frames (lower frame rates) need it. The affines map current-frame grid
    coordinates into the previous frame's, so the chain is M_(i+1) @ ... @ M_j."""
    total = np.eye(3)
    for motion in motions:
        total = total @ np.vstack([motion, [0.0, 0.0, 1.0]])
    return total[:2].astype(np.float32)


def cache_key(cfg: ModelConfig) -> str:
    """Short hash of everything in the model config that changes the cached arrays."""
    doc = cfg.to_dict()
    doc.pop("network")
    doc.pop("inputs", None)  # which optional inputs the graph declares changes no cached array
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]


def load_or_render(spec: SequenceSpec, rig: Rig, cfg: ModelConfig, cache_dir: Path) -> Sequence:
    """The sequence from ``cache_dir`` if present, else rendered and saved there."""
    path = cache_dir / cache_key(cfg) / f"seq_{spec.condition}_{spec.seed}_{spec.num_frames}.npz"
    if path.is_file():
        with np.load(path) as data:
            return Sequence(**{k: data[k] for k in FRAME_FIELDS})
    sequence = render_sequence(spec, rig, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: getattr(sequence, k) for k in FRAME_FIELDS})
    tmp.rename(path)
    return sequence


def training_specs(seeds: range, conditions: list[str], num_frames: int) -> Iterator[SequenceSpec]:
    """One sequence per seed; conditions assigned round-robin so every mix is covered."""
    for i, seed in enumerate(seeds):
        yield SequenceSpec(seed, conditions[i % len(conditions)], num_frames)
