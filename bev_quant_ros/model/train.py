"""Train the reference BEV network on synthetic sequences and/or recorded drives (2-core CPU friendly, resumable).

Each step takes ``batch_size`` random windows of ``window`` consecutive frames; the first
frame of a window starts with prev_valid = 0, later frames are fed the model's own
``bev_state`` (what the engine does at runtime), detached unless ``detach_state: false``.
Augmentation models the
failures the node sees: missing cameras, missing lidar, a reset state, exposure changes.
Checkpoints (``last.pt``) are written every ``checkpoint_every_steps`` and on exit; a
run started with the same ``--out`` resumes from ``last.pt``. Drives (``data.drives`` or
``--drives``: bags with ground truth, read with the node's params file) are cut into pieces
of ``frames_per_sequence`` frames (model/drive_data.py) and sampled like simulated sequences.
``frame_steps`` > 1 samples every 2nd/3rd frame (15/10 Hz) with the composed ego motion and
``dt``, so a network that reads ``dt`` (v3) learns velocities at any frame rate; v3's camera-only
auxiliary head adds ``AUX_LOSS_WEIGHT`` x its detection loss. ``model_config`` is a model
config YAML path or the config itself (a mapping, as ``ModelConfig.to_dict`` writes it).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.dataset import (
    MAX_TRAIN_SEED,
    Sequence,
    compose_ego_motion,
    load_or_render,
    training_specs,
)
from bev_quant_ros.model.drive_data import load_or_read_drive, require_ground_truth, split_windows
from bev_quant_ros.model.losses import AUX_LOSS_WEIGHT, detection_loss
from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.model.warm_start import warm_start
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.model_config import ModelConfig, load_model_config, model_config_from_dict
from bev_quant_ros.perception.preprocess import camera_sampling_grid

LOG = logging.getLogger("bev_quant_ros.train")
CHECKPOINT_NAME = "last.pt"


@dataclass(frozen=True)
class DriveEntry:
    """A bag, a directory of bags, or ``synth:<condition>:<seed>:<frames>`` to train on."""

    path: str
    condition: str = "bag"


@dataclass(frozen=True)
class TrainConfig:
    model_config: str | dict[str, Any]  # YAML path or the model config mapping itself
    seed: int
    cache_dir: str
    seeds: tuple[int, int]  # [start, stop) of training seeds
    conditions: tuple[str, ...]
    frames_per_sequence: int
    window: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    time_budget_min: float
    camera_dropout_p: float
    all_cameras_off_p: float
    lidar_off_p: float
    prev_reset_p: float
    brightness_jitter: float
    checkpoint_every_steps: int
    log_every_steps: int
    threads: int = 2
    detach_state: bool = True  # False: back-propagate through the whole window (see run_window)
    drives: tuple[DriveEntry, ...] = ()  # recorded drives with ground truth, besides the seeds
    frame_steps: tuple[int, ...] = (1,)  # frames between window frames, drawn per window (2 = 15 Hz)
    frame_period_s: float = 1 / 30  # camera period of the sequences: dt = step x period
    init_from: str | None = None  # FP32 ONNX model to start from (model/warm_start.py); None: random init
    init_windows: int = 8  # training windows whose statistics the warm start's BatchNorms take

    def __post_init__(self) -> None:
        if not 0 <= self.seeds[0] <= self.seeds[1] <= MAX_TRAIN_SEED:
            raise ConfigError(f"train seeds must be within [0, {MAX_TRAIN_SEED}), got {self.seeds}")
        if self.seeds[0] == self.seeds[1] and not self.drives:
            raise ConfigError("no training data: the seed range is empty and no drives are given")
        if not 1 <= self.window <= self.frames_per_sequence:
            raise ConfigError("train window must be in [1, frames_per_sequence]")
        if self.batch_size < 1 or self.steps < 1 or self.lr <= 0:
            raise ConfigError("train batch_size, steps and lr must be positive")
        if not self.frame_steps or min(self.frame_steps) < 1 or self.frame_period_s <= 0:
            raise ConfigError("train frame_steps must be >= 1 and frame_period_s positive")
        if (self.window - 1) * max(self.frame_steps) + 1 > self.frames_per_sequence:
            raise ConfigError(f"a window of {self.window} frames at step {max(self.frame_steps)} needs "
                              f"{(self.window - 1) * max(self.frame_steps) + 1} frames_per_sequence")

    def model(self) -> ModelConfig:
        """The model config (read from its file when ``model_config`` is a path)."""
        if isinstance(self.model_config, dict):
            return model_config_from_dict(self.model_config, "the training config's model_config")
        return load_model_config(self.model_config)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read the flat sections (data, optim, augment, run) of a training YAML."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        flat: dict[str, Any] = {"model_config": doc["model_config"], "seed": doc["seed"],
                                "init_from": doc.get("init_from")}
        for section in ("data", "optim", "augment", "run"):
            flat.update(doc.get(section, {}))
        flat["seeds"] = tuple(flat["seeds"])
        flat["conditions"] = tuple(flat["conditions"])
        flat["frame_steps"] = tuple(flat.get("frame_steps", (1,)))
        flat["drives"] = tuple(DriveEntry(**d) if isinstance(d, dict) else DriveEntry(str(d))
                               for d in flat.get("drives") or ())
        return TrainConfig(**flat)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"bad training config {path}: {exc!r}") from exc


class WindowSampler:
    """Random training windows with augmentation, as batched torch tensors."""

    def __init__(self, sequences: list[Sequence], cam_grid: np.ndarray, cfg: TrainConfig,
                 rng: np.random.Generator) -> None:
        """``cam_grid``: the grid of the training rig, used by sequences that bring none (simulated)."""
        self.sequences, self.cfg, self.rng = sequences, cfg, rng
        self.grids = [seq.cam_grid if seq.cam_grid is not None else cam_grid for seq in sequences]

    def sample(self) -> list[dict[str, torch.Tensor]]:
        """``window`` frames, each a dict of batched inputs (``cam_grid`` included) and targets;
        each window of the batch has its own step (from the ``frame_steps`` its sequence fits)."""
        cfg, rng = self.cfg, self.rng
        picks = []
        for _ in range(cfg.batch_size):
            i = int(rng.integers(len(self.sequences)))
            steps = [s for s in cfg.frame_steps if (cfg.window - 1) * s < len(self.sequences[i])] or [1]
            step = int(rng.choice(steps))
            picks.append((i, int(rng.integers(len(self.sequences[i]) - (cfg.window - 1) * step)), step))
        grid = torch.from_numpy(np.stack([self.grids[i] for i, _, _ in picks]))
        frames = []
        for t in range(cfg.window):
            rows = [self._frame(self.sequences[i], start + t * step, step, first=(t == 0)) for i, start, step in picks]
            frames.append({"cam_grid": grid, **{k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}})
        return frames

    def _frame(self, seq: Sequence, t: int, step: int, first: bool) -> dict[str, np.ndarray]:
        """Frame ``t``, ``step`` frames after the window's previous frame (ego motion composed over them)."""
        cfg, rng = self.cfg, self.rng
        images = seq.images[t].astype(np.float32)
        gain = 1.0 + rng.uniform(-cfg.brightness_jitter, cfg.brightness_jitter, (6, 1, 1, 1))
        images = np.clip(images * gain, 0, 255).astype(np.float32)
        camera_valid = (rng.random(6) >= cfg.camera_dropout_p).astype(np.float32)
        if seq.camera_valid is not None:  # a camera missing in the recorded drive stays missing
            camera_valid *= seq.camera_valid[t]
        if rng.random() < cfg.all_cameras_off_p:
            camera_valid[:] = 0.0
        lidar = seq.lidar_bev[t].astype(np.float32)
        if rng.random() < cfg.lidar_off_p:
            lidar = np.zeros_like(lidar)
        prev_valid = 0.0 if first or rng.random() < cfg.prev_reset_p else 1.0
        motion = seq.ego_motion[t] if first else compose_ego_motion(seq.ego_motion[t - step + 1:t + 1])
        return {"images": images, "camera_valid": camera_valid, "lidar_bev": lidar,
                "lidar_valid": np.array([float(lidar.any())], np.float32),
                "dt": np.array([prev_valid * step * cfg.frame_period_s], np.float32),
                "ego_motion": motion, "prev_valid": np.array([prev_valid], np.float32),
                "heatmap": seq.heatmap[t].astype(np.float32), "box_reg": seq.box_reg[t],
                "reg_mask": seq.reg_mask[t].astype(np.float32)}


def run_window(net: BEVDetector, frames: list[dict[str, torch.Tensor]], train: bool,
               detach_state: bool = True) -> dict[str, float]:
    """Forward (and backward) over one window of frames, feeding the state forward.

    ``detach_state``: truncated back-propagation (one frame, the default, what the engine's
    state hand-off looks like); False back-propagates through the whole window so the
    state learns to carry what later frames need (e.g. motion for velocity).
    """
    b = frames[0]["images"].shape[0]
    state = torch.zeros(b, net.cfg.C, net.cfg.Ho, net.cfg.Wo)
    totals = {"loss": 0.0, "focal": 0.0, "reg": 0.0, "aux": 0.0}
    window_loss = torch.zeros(())
    for f in frames:
        out = net.forward_logits(f["images"], f["camera_valid"], f["cam_grid"], f["lidar_bev"], state,
                                 f["ego_motion"], f["prev_valid"], f["dt"], f["lidar_valid"])
        loss, parts = detection_loss(out.heatmap, out.box_reg, f["heatmap"], f["box_reg"], f["reg_mask"])
        if out.aux is not None:  # v3 camera-only head (training mode)
            aux_loss, _ = detection_loss(*out.aux, f["heatmap"], f["box_reg"], f["reg_mask"])
            loss = loss + AUX_LOSS_WEIGHT * aux_loss
            parts["aux"] = float(aux_loss.detach())
        bev_state = out.bev_state
        if train and detach_state:
            (loss / len(frames)).backward()
        elif train:
            window_loss = window_loss + loss / len(frames)
        state = bev_state.detach() if detach_state else bev_state
        totals["loss"] += float(loss.detach()) / len(frames)
        for k, v in parts.items():
            totals[k] += v / len(frames)
    if train and not detach_state:
        window_loss.backward()
    return totals


def save_checkpoint(path: Path, net: BEVDetector, optimizer, scheduler, step: int, train_cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step,
                "model_config": net.cfg.to_dict(), "train_config": train_cfg.__dict__}, tmp)
    tmp.rename(path)


def load_detector(checkpoint_path: str | Path) -> BEVDetector:
    """The trained network (eval mode) from a checkpoint written by ``train``."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    net = BEVDetector(model_config_from_dict(ckpt["model_config"], str(checkpoint_path)))
    net.load_state_dict(ckpt["model"])
    return net.eval()


def load_sequences(train_cfg: TrainConfig, model_cfg: ModelConfig, rig,
                   settings: ReaderSettings | None = None) -> list[Sequence]:
    """Every training sequence: simulated ones rendered on first use, then the drives (read with
    ``settings``, default the node's), all cached under ``cache_dir``."""
    drives = [(entry, drive) for entry in train_cfg.drives
              for drive in open_drives(entry.path, settings, entry.condition)]
    for _, drive in drives:  # every drive checked before hours of rendering
        require_ground_truth(drive)
    specs = list(training_specs(range(*train_cfg.seeds), list(train_cfg.conditions),
                                train_cfg.frames_per_sequence))
    sequences, t0 = [], time.monotonic()
    for i, spec in enumerate(specs):
        sequences.append(load_or_render(spec, rig, model_cfg, Path(train_cfg.cache_dir)))
        if (i + 1) % 20 == 0 or i + 1 == len(specs):
            LOG.info("data: %d/%d sequences ready (%.0f s)", i + 1, len(specs), time.monotonic() - t0)
    for entry, drive in tqdm(drives, desc="drives", unit="drive", disable=not drives):
        runs = load_or_read_drive(drive, model_cfg, Path(train_cfg.cache_dir))
        pieces = split_windows(runs, train_cfg.frames_per_sequence, train_cfg.window)
        if not pieces:
            raise ConfigError(f"drive {drive.name} ({entry.path}): no {train_cfg.window} consecutive frames "
                              f"without a reset of the temporal state (runs of {[len(r) for r in runs]} frames)")
        LOG.info("data: drive %s (%s): %d frames, %d sequences", drive.name, drive.condition,
                 sum(len(r) for r in runs), len(pieces))
        sequences += pieces
    return sequences


def train(train_cfg: TrainConfig, out_dir: Path, settings: ReaderSettings | None = None) -> Path:
    """Train (or resume) and return the checkpoint path; ``settings``: how drives' bags are read."""
    torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_cfg = train_cfg.model()
    rig = load_rig()
    cam_grid = camera_sampling_grid(rig, model_cfg)
    sequences = load_sequences(train_cfg, model_cfg, rig, settings)

    net = BEVDetector(model_cfg)
    optimizer = torch.optim.AdamW(net.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, train_cfg))
    ckpt_path, start = out_dir / CHECKPOINT_NAME, 0
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start = int(ckpt["step"])
        LOG.info("resumed from %s at step %d", ckpt_path, start)
    elif train_cfg.init_from:
        init_sampler = WindowSampler(sequences, cam_grid, train_cfg, np.random.default_rng([train_cfg.seed, 0, 1]))
        windows = [init_sampler.sample() for _ in range(train_cfg.init_windows)]
        warm_start(net, train_cfg.init_from, [partial(run_window, net, w, False) for w in windows])
    # the sampler's stream depends on the step so a resumed run does not replay old windows
    sampler = WindowSampler(sequences, cam_grid, train_cfg, np.random.default_rng([train_cfg.seed, start]))
    net.train()
    t0, running, logged = time.monotonic(), {"loss": 0.0, "focal": 0.0, "reg": 0.0, "aux": 0.0}, 0
    step = start
    while step < train_cfg.steps:
        parts = run_window(net, sampler.sample(), train=True, detach_state=train_cfg.detach_state)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        for k in running:
            running[k] += parts[k]
        logged += 1
        elapsed_min = (time.monotonic() - t0) / 60
        if step % train_cfg.log_every_steps == 0:  # means over the steps since the last line (fewer after a resume)
            mean = {k: v / logged for k, v in running.items()}
            eta_min = elapsed_min / (step - start) * (train_cfg.steps - step)
            LOG.info("step %d/%d loss %.4f focal %.4f reg %.4f aux %.4f lr %.2e (%.1f min, ETA %.0f min)", step,
                     train_cfg.steps, mean["loss"], mean["focal"], mean["reg"], mean["aux"],
                     scheduler.get_last_lr()[0], elapsed_min, eta_min)
            running, logged = dict.fromkeys(running, 0.0), 0
        if step % train_cfg.checkpoint_every_steps == 0:
            save_checkpoint(ckpt_path, net, optimizer, scheduler, step, train_cfg)
        if elapsed_min > train_cfg.time_budget_min:
            LOG.warning("time budget of %.0f min reached at step %d; resume with the same command",
                        train_cfg.time_budget_min, step)
            break
    save_checkpoint(ckpt_path, net, optimizer, scheduler, step, train_cfg)
    LOG.info("checkpoint %s (step %d)", ckpt_path, step)
    return ckpt_path


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 5 % over ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
