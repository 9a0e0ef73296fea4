"""Offline evaluation on drives: a bag and the in-memory simulator give the same frames and detections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.drives.bag import BagDrive
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.drives.synth import SynthSpec, synth_frames
from bev_quant_ros.errors import ConfigError
from bev_quant_ros.evaluation.metrics import evaluate_detections
from bev_quant_ros.evaluation.offline import run_pipeline
from bev_quant_ros.perception.pipeline import BevPipeline
from synth_bags import write_synth_bag

SPEC = SynthSpec("night", 100_004, 7)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "bag"
    return write_synth_bag(path, SPEC.seed, SPEC.condition, SPEC.frames, compressed=False)


def test_bag_replay_equals_in_memory_frames(bag, tiny_model_path, tiny_model_config):
    from_bag = list(BagDrive(bag, ReaderSettings.from_params()).frames(tiny_model_config))
    in_memory = list(synth_frames(SPEC))
    assert [f.sensors.stamp_ns for f in from_bag] == [f.sensors.stamp_ns for f in in_memory]
    for a, b in zip(from_bag, in_memory):
        np.testing.assert_array_equal(np.stack(a.sensors.images), np.stack(b.sensors.images))
        np.testing.assert_array_equal(a.sensors.points, b.sensors.points)
        assert a.sensors.lidar_stamp_ns == b.sensors.lidar_stamp_ns
        np.testing.assert_allclose(a.sensors.T_world_ego, b.sensors.T_world_ego, atol=1e-9)
        np.testing.assert_allclose(a.ground_truth.centers, b.ground_truth.centers, atol=1e-9)
        assert a.ground_truth.class_names == b.ground_truth.class_names
    runs = [run_pipeline(BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05),
                         frames) for frames in (from_bag, in_memory)]
    for p, q in zip(runs[0].predictions, runs[1].predictions):
        assert len(p) == len(q) > 0
        np.testing.assert_allclose(p.scores, q.scores, atol=1e-6)
    assert runs[0].resets == runs[1].resets == 1  # only the first frame: the state is carried


def test_evaluate_cli_writes_the_metrics_json(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert bev_quant(["evaluate", "--data", "synth:fog:100005:3", "--model", str(tiny_model_path),
                      "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "per_class", "frames", "condition"} <= set(result)
    assert result["frames"] == 3 and result["condition"] == "fog"
    assert 0.0 <= result["NDS"] <= 1.0
    assert "mAP" in capsys.readouterr().out


@pytest.mark.parametrize("data, message", [
    ("synth:snow:1:3", "condition must be one of"),
    ("synth:day:x:3", "must be integers"),
    ("synth:day:1:0", "frames must be positive"),
    ("synth:day:1", "synth:<condition>:<seed>:<frames>"),
])
def test_bad_synth_specs(data, message):
    with pytest.raises(ConfigError, match=message):
        SynthSpec.parse(data)


def test_bad_data_paths(tmp_path, tiny_model_path, capsys):
    with pytest.raises(ConfigError, match="neither a rosbag2 directory nor a directory of bags"):
        open_drives(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        open_drives(tmp_path / "absent")
    assert bev_quant(["evaluate", "--data", str(tmp_path), "--model", str(tiny_model_path)]) == 2
    assert "neither a rosbag2 directory" in capsys.readouterr().err


def test_a_directory_of_bags_is_one_drive_each_and_the_total_is_computed_once(bag, tmp_path, tiny_model_path,
                                                                              capsys):
    import shutil

    drives_dir = tmp_path / "drives"
    for name in ("a", "b"):
        shutil.copytree(bag, drives_dir / name)
    out = tmp_path / "all.json"
    assert bev_quant(["evaluate", "--data", str(drives_dir), "--model", str(tiny_model_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["drives"]) == {"a", "b"} and result["frames"] == 2 * SPEC.frames
    # the total is the metrics of all frames at once (not a mean of the per-drive values)
    pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
    run = run_pipeline(pipeline, synth_frames(SPEC))
    expected = evaluate_detections(run.predictions * 2, run.ground_truth * 2).to_json()
    assert result["NDS"] == pytest.approx(expected["NDS"], abs=1e-12)
    assert result["mATE"] == pytest.approx(expected["mATE"], abs=1e-12)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a: ") and any(line.startswith("all 2 drives: ") for line in lines)
