"""Offline evaluation: a bag and the in-memory simulator give the same frames and detections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.errors import ConfigError, InvalidMessageError
from bev_quant_ros.evaluation.offline import run_pipeline
from bev_quant_ros.evaluation.sources import SynthSpec, bag_frames, synth_frames
from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag

SPEC = SynthSpec("night", 100_004, 7)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "bag"
    write_bag(path, generate_frames(SPEC.seed, SPEC.condition, SPEC.frames), load_rig())
    return path


def test_bag_replay_equals_in_memory_frames(bag, tiny_model_path, tiny_model_config):
    from_bag = list(bag_frames(bag, load_rig(), tiny_model_config))
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


def test_bad_data_paths(tmp_path, tiny_model_path, tiny_model_config, capsys):
    with pytest.raises(ConfigError, match="not a rosbag2 directory"):
        next(bag_frames(tmp_path, load_rig(), tiny_model_config))
    assert bev_quant(["evaluate", "--data", str(tmp_path), "--model", str(tiny_model_path)]) == 2
    assert "not a rosbag2 directory" in capsys.readouterr().err


def test_bag_without_ground_truth_is_rejected(tmp_path, tiny_model_config):
    from rosbags.rosbag2 import Writer

    from bev_quant_ros.ros.detection_encoding import make_typestore

    store = make_typestore()
    with Writer(tmp_path / "bag", version=9) as writer:
        connection = writer.add_connection("/CAM_FRONT/image_raw", "sensor_msgs/msg/Image", typestore=store)
        Image = store.types["sensor_msgs/msg/Image"]
        header = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                    frame_id="cam")
        msg = Image(header=header, height=1, width=1, encoding="rgb8", is_bigendian=0, step=3,
                    data=np.zeros(3, np.uint8))
        writer.write(connection, 1_000_000_000, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    with pytest.raises(InvalidMessageError, match="no /ground_truth/objects"):
        next(bag_frames(tmp_path / "bag", load_rig(), tiny_model_config))
