"""Training sequences from recorded drives: bags (or directories of bags) with ground truth.

A drive is read exactly as the node reads it (`Drive.frames`: the node's assembly and
decode) and preprocessed by the pipeline's own ``FramePreprocessor`` on the drive's rig
(``drive.rig``, so each drive has its camera sampling grid). Ego motion and the splits come
from the node's reset rules (``TemporalState``): a training window never spans a reset.
Targets encode every labelled box (a bag says nothing about visibility, unlike the
simulator's ``observable_gt``). Preprocessed drives are cached next to the synthetic
sequences, keyed by the bag's path, file sizes and mtimes and the reader settings, so a
changed bag or params file is read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from bev_quant_ros.drives.bag import BagDrive
from bev_quant_ros.drives.frames import Drive
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.dataset import FRAME_FIELDS, Sequence, cache_key, frame_arrays
from bev_quant_ros.perception.model_config import ModelConfig
from bev_quant_ros.perception.pipeline import FramePreprocessor
from bev_quant_ros.perception.preprocess import ego_motion_affine
from bev_quant_ros.perception.temporal import TemporalState

IDENTITY_MOTION = np.eye(2, 3, dtype=np.float32)


def require_ground_truth(drive: Drive) -> None:
    """Training needs labels: a drive without them is a ConfigError naming it."""
    if not drive.has_ground_truth:
        topic = drive.settings.ground_truth_topic if isinstance(drive, BagDrive) else "ground truth"
        raise ConfigError(f"drive {drive.name} has no {topic} (vision_msgs/Detection3DArray): "
                          "training needs drives with ground truth (set --gt-topic)")


def read_drive(drive: Drive, cfg: ModelConfig) -> list[Sequence]:
    """The drive's frames as model inputs and targets, one sequence per run between resets."""
    require_ground_truth(drive)
    preprocessor, temporal = FramePreprocessor(cfg, drive.rig), TemporalState()  # the pipeline's own stages
    runs: list[dict[str, list[np.ndarray]]] = []
    grid = None
    for frame in drive.frames(cfg):
        prepared = preprocessor.prepare(frame.sensors)
        decision = temporal.step(prepared.stamp_ns, prepared.T_world_ego)
        if decision.reset_reason is None:
            motion = ego_motion_affine(decision.T_world_ego_prev, decision.T_world_ego, cfg)
        else:
            motion = IDENTITY_MOTION
            runs.append({k: [] for k in (*FRAME_FIELDS, "camera_valid")})
        inputs = prepared.inputs
        grid = inputs["cam_grid"]
        arrays = frame_arrays(inputs["images"], inputs["lidar_bev"], motion, frame.ground_truth, cfg)
        arrays["camera_valid"] = inputs["camera_valid"].astype(np.uint8)
        for k, v in arrays.items():
            runs[-1][k].append(v)
    return [Sequence(**{k: np.stack(v) for k, v in run.items()}, cam_grid=grid) for run in runs]


def split_windows(sequences: list[Sequence], frames: int, window: int) -> list[Sequence]:
    """Consecutive pieces of ``frames`` frames (the configured sequence length); a shorter tail is
    kept when it still holds a ``window``, so every piece weighs like one simulated sequence."""
    pieces = []
    for seq in sequences:
        for start in range(0, len(seq), frames):
            if len(seq) - start >= window:
                pieces.append(_slice(seq, start, start + frames))
    return pieces


def _slice(seq: Sequence, start: int, stop: int) -> Sequence:
    per_frame = {k: getattr(seq, k)[start:stop] for k in (*FRAME_FIELDS, "camera_valid")}
    return Sequence(**per_frame, cam_grid=seq.cam_grid)


def drive_fingerprint(drive: Drive) -> str:
    """Short hash of what the drive's arrays depend on: for a bag its resolved path, every file's
    size and mtime and the reader settings; for a simulated drive its spec."""
    if isinstance(drive, BagDrive):
        files = sorted(p for p in drive.path.rglob("*") if p.is_file())
        doc = {"path": str(drive.path.resolve()), "settings": dataclasses.asdict(drive.settings),
               "files": [(str(p.relative_to(drive.path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]}
    else:
        doc = {"drive": drive.name}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]


def drive_cache_path(drive: Drive, cfg: ModelConfig, cache_dir: Path) -> Path:
    name = re.sub(r"[^\w.-]+", "_", drive.name)
    return cache_dir / cache_key(cfg) / f"drive_{name}_{drive_fingerprint(drive)}.npz"


def load_or_read_drive(drive: Drive, cfg: ModelConfig, cache_dir: Path) -> list[Sequence]:
    """The drive's sequences from ``cache_dir`` if this version of it was read before, else read and saved."""
    require_ground_truth(drive)
    path = drive_cache_path(drive, cfg, cache_dir)
    if path.is_file():
        with np.load(path) as data:
            return _unpack({k: data[k] for k in data.files})
    sequences = read_drive(drive, cfg)
    if not sequences:
        raise ConfigError(f"drive {drive.name} has no frame with ground truth")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **_pack(sequences))
    tmp.rename(path)
    return sequences


def _pack(sequences: list[Sequence]) -> dict[str, np.ndarray]:
    """All runs of one drive concatenated along the frame axis, with their lengths (one rig, one grid)."""
    packed = {k: np.concatenate([getattr(s, k) for s in sequences]) for k in (*FRAME_FIELDS, "camera_valid")}
    packed["lengths"] = np.array([len(s) for s in sequences], np.int64)
    packed["cam_grid"] = sequences[0].cam_grid
    return packed


def _unpack(packed: dict[str, np.ndarray]) -> list[Sequence]:
    whole = Sequence(**{k: packed[k] for k in (*FRAME_FIELDS, "camera_valid")}, cam_grid=packed["cam_grid"])
    bounds = np.concatenate([[0], np.cumsum(packed["lengths"])])
    return [_slice(whole, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
