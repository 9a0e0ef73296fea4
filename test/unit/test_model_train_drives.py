"""Training from drives: a bag gives the training arrays of the same frames in memory, trains, and needs labels."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.drives.remap import remap_bag
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthDrive, SynthSpec
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.model.dataset import FRAME_FIELDS
from bev_quant_ros.model.drive_data import drive_cache_path, load_or_read_drive, read_drive, split_windows
from bev_quant_ros.model.network import BEVDetector
from bev_quant_ros.model.train import (
    DriveEntry,
    WindowSampler,
    load_detector,
    load_train_config,
    run_window,
    train,
)
from bev_quant_ros.sim.ground_truth import GT_TOPIC
from synth_bags import write_synth_bag
from tiny_model import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "train_bev_tiny.yaml"
TINY = tiny_config()
SPEC = SynthSpec("day", 7, 5)


@pytest.fixture(scope="module")
def raw_bag(tmp_path_factory) -> Path:
    """The frames of SPEC written as a bag with raw images (no JPEG: the pixels are the same)."""
    path = tmp_path_factory.mktemp("drives") / "day7"
    return write_synth_bag(path, SPEC.seed, SPEC.condition, SPEC.frames, compressed=False)


@pytest.fixture()
def tiny_train_config(raw_bag, tmp_path) -> Path:
    """The shipped training YAML on the tiny model and the bag only: a few steps, windows of 2 in pieces of 3."""
    TINY.save(tmp_path / "tiny.yaml")
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["model_config"] = str(tmp_path / "tiny.yaml")
    doc["data"].update(cache_dir=str(tmp_path / "cache"), seeds=[0, 0], frames_per_sequence=3, window=2,
                       drives=[{"path": str(raw_bag), "condition": "day"}])
    doc["optim"].update(steps=3, batch_size=2, warmup_steps=1)
    doc["run"].update(checkpoint_every_steps=2, log_every_steps=1)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_bag_gives_the_training_arrays_of_the_same_frames_in_memory(raw_bag):
    [bag] = open_drives(raw_bag)
    from_bag, in_memory = read_drive(bag, TINY), read_drive(SynthDrive(SPEC), TINY)
    assert [len(s) for s in from_bag] == [len(s) for s in in_memory] == [SPEC.frames]  # no reset inside
    a, b = from_bag[0], in_memory[0]
    assert a.reg_mask.sum() > 0 and a.heatmap.max() == 1.0  # boxes on the grid: the targets are not empty
    assert a.camera_valid.min() == 1
    np.testing.assert_array_equal(a.images, b.images)
    for field in ("lidar_bev", "ego_motion", "heatmap", "box_reg", "reg_mask", "camera_valid", "cam_grid"):
        np.testing.assert_allclose(getattr(a, field).astype(np.float64), getattr(b, field).astype(np.float64),
                                   atol=1e-6, rtol=0, err_msg=field)
    assert not np.allclose(a.ego_motion[1], np.eye(2, 3))  # the ego moves: motion from the poses, not identity


def test_drive_pieces_and_cache_follow_the_bag(raw_bag, tmp_path):
    [bag] = open_drives(raw_bag)
    runs = load_or_read_drive(bag, TINY, tmp_path)
    cached = drive_cache_path(bag, TINY, tmp_path)
    assert cached.is_file()
    again = load_or_read_drive(bag, TINY, tmp_path)
    for field in (*FRAME_FIELDS, "camera_valid", "cam_grid"):
        np.testing.assert_array_equal(getattr(again[0], field), getattr(runs[0], field))
    assert [len(p) for p in split_windows(runs, 3, 2)] == [3, 2]
    assert [len(p) for p in split_windows(runs, 4, 2)] == [4]  # a tail shorter than a window is left out
    data_file = next(raw_bag.glob("*.mcap"))
    stat = data_file.stat()
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert drive_cache_path(bag, TINY, tmp_path) != cached  # a changed bag is read again


def test_training_on_a_bag_drive_reduces_the_loss_and_writes_a_checkpoint(raw_bag, tiny_train_config, tmp_path):
    cfg = load_train_config(tiny_train_config)
    assert cfg.drives == (DriveEntry(str(raw_bag), "day"),)
    torch.manual_seed(0)
    [bag] = open_drives(raw_bag)
    pieces = split_windows(read_drive(bag, TINY), cfg.frames_per_sequence, cfg.window)
    no_augment = dataclasses.replace(cfg, camera_dropout_p=0.0, all_cameras_off_p=0.0, lidar_off_p=0.0,
                                     prev_reset_p=0.0, brightness_jitter=0.0)
    window = WindowSampler(pieces, np.zeros(0), no_augment, np.random.default_rng(0)).sample()
    assert window[0]["cam_grid"].shape == (2, TINY.Z * TINY.Ho, TINY.Wo, 2)
    net = BEVDetector(TINY)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        losses.append(run_window(net, window, train=True)["loss"])
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.5 * losses[0], losses

    checkpoint = train(cfg, tmp_path / "run")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["step"] == cfg.steps and saved["train_config"]["drives"] == cfg.drives
    assert load_detector(checkpoint).cfg == TINY


def test_a_drive_without_ground_truth_is_a_config_error_naming_it(raw_bag, tiny_train_config, tmp_path, capsys):
    unlabelled = remap_bag(raw_bag, tmp_path / "unlabelled", {}, drop=frozenset({GT_TOPIC}))
    code = bev_quant(["train", "--config", str(tiny_train_config), "--out", str(tmp_path / "run"),
                      "--drives", str(unlabelled), "--no-synthetic"])
    err = capsys.readouterr().err
    assert code == 2 and "unlabelled" in err and "ground truth" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()
    with pytest.raises(ConfigError, match="no training data"):
        dataclasses.replace(load_train_config(tiny_train_config), drives=())


def test_a_camera_missing_in_the_drive_stays_missing_in_every_window(raw_bag, tiny_train_config):
    cfg = dataclasses.replace(load_train_config(tiny_train_config), camera_dropout_p=0.0, all_cameras_off_p=0.0)
    [bag] = open_drives(raw_bag)
    [run] = read_drive(bag, TINY)
    run.camera_valid[:, 2] = 0
    windows = [WindowSampler([run], np.zeros(0), cfg, np.random.default_rng(seed)).sample() for seed in range(3)]
    valid = torch.stack([f["camera_valid"] for w in windows for f in w])  # [windows*frames, batch, 6]
    assert valid[..., 2].max() == 0 and valid[..., [0, 1, 3, 4, 5]].min() == 1
