"""A user's own drive: other topic names, the rig only in CameraInfo + tf_static, no ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from bev_quant_ros.cli import main as bev_quant
from bev_quant_ros.drives.remap import autoware_params, autoware_renames, remap_bag
from bev_quant_ros.drives.settings import ReaderSettings, load_node_params
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.errors import BagError, ConfigError
from bev_quant_ros.perception.geometry import default_rig_path, load_rig
from bev_quant_ros.perception.pipeline import BevPipeline
from bev_quant_ros.sim.ground_truth import GT_TOPIC
from synth_bags import write_synth_bag

FRAMES = 6


@pytest.fixture(scope="module")
def synth_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("own") / "synth"
    return write_synth_bag(path, 100_006, "day", FRAMES)


@pytest.fixture(scope="module")
def own_drive(synth_bag, tmp_path_factory):
    """The synthetic drive as a vehicle records it: Autoware topic names, no ground truth."""
    root = tmp_path_factory.mktemp("vehicle")
    bag = remap_bag(synth_bag, root / "drive", autoware_renames(compressed=True), drop=frozenset({GT_TOPIC}))
    return bag, autoware_params(root / "vehicle.param.yaml", compressed=True)


@pytest.fixture()
def wrong_rig_file(tmp_path):
    """A rig YAML whose cameras and lidar are all wrong: the bag's calibration must win."""
    doc = yaml.safe_load(default_rig_path().read_text())
    for entry in [*doc["cameras"], doc["lidar"]]:
        entry["translation"] = [v + 0.5 for v in entry["translation"]]
    for camera in doc["cameras"]:
        camera["fx"] *= 1.5
    path = tmp_path / "wrong_rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_params_file_gives_the_nodes_topics_resolved_in_its_namespace(own_drive, tmp_path):
    _, params = own_drive
    settings = ReaderSettings.from_params_file(params)
    assert settings.image_topics[0] == "/sensing/camera/front/image_raw/compressed"
    assert settings.lidar_topic == "/sensing/lidar/top/pointcloud"
    defaults = ReaderSettings.from_params(namespace="/veh1")
    assert defaults.image_topics[0] == "/veh1/CAM_FRONT/image_raw" and defaults.odom_topic == "/veh1/odom"
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    sync_slop_s: 5.0\n")
    with pytest.raises(ConfigError, match="sync_slop_s"):
        load_node_params(bad)


def test_own_drive_reads_with_the_rig_from_the_bag_and_no_ground_truth(own_drive, wrong_rig_file, synth_bag,
                                                                         tiny_model_config):
    bag, params = own_drive
    settings = dataclasses.replace(ReaderSettings.from_params_file(params), rig_path=str(wrong_rig_file))
    [drive] = open_drives(bag, settings)
    assert not drive.has_ground_truth
    truth = load_rig()
    for got, want in zip(drive.rig.cameras, truth.cameras):
        np.testing.assert_allclose(got.K, want.K, atol=1e-9)
        np.testing.assert_allclose(got.T_ego_cam, want.T_ego_cam, atol=1e-6)
    np.testing.assert_allclose(drive.rig.T_ego_lidar, truth.T_ego_lidar, atol=1e-6)
    frames = list(drive.frames(tiny_model_config))
    assert len(frames) == FRAMES and all(f.ground_truth is None for f in frames)
    # the same frames as the original bag read with the node's defaults
    [original] = open_drives(synth_bag, ReaderSettings.from_params({"image_transport": "compressed"}))
    for a, b in zip(frames, original.frames(tiny_model_config)):
        assert a.sensors.stamp_ns == b.sensors.stamp_ns
        np.testing.assert_array_equal(np.stack(a.sensors.images), np.stack(b.sensors.images))
        np.testing.assert_array_equal(a.sensors.points, b.sensors.points)


def test_evaluate_runs_an_own_drive_without_ground_truth(own_drive, tiny_model_path, capsys):
    bag, params = own_drive
    assert bev_quant(["evaluate", "--data", str(bag), "--params", str(params), "--model", str(tiny_model_path)]) == 0
    out = capsys.readouterr().out
    assert f"{FRAMES} frames" in out and "no ground truth: no metrics" in out


def test_own_drive_read_with_the_default_topics_names_the_missing_topics(own_drive, tiny_model_path, capsys):
    bag, _ = own_drive
    assert bev_quant(["evaluate", "--data", str(bag), "--model", str(tiny_model_path)]) == 2
    err = capsys.readouterr().err
    assert "none of the camera topics of the params file" in err and "/sensing/camera/front/image_raw/compressed" in err


def test_a_topic_of_the_wrong_type_and_a_broken_bag_are_one_line_errors(synth_bag, tmp_path):
    settings = ReaderSettings.from_params({"image_transport": "raw"})  # the bag's cameras are compressed
    with pytest.raises(ConfigError, match="none of the camera topics"):
        open_drives(synth_bag, settings)
    mislabelled = remap_bag(synth_bag, tmp_path / "mislabelled", {"/odom": "/lidar/points", "/lidar/points": "/x"})
    with pytest.raises(ConfigError, match="topic /lidar/points is nav_msgs/msg/Odometry"):
        open_drives(mislabelled, ReaderSettings.from_params({"image_transport": "compressed"}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping\n")
    with pytest.raises(BagError, match="cannot open bag"):
        open_drives(broken)


def test_pipeline_on_the_own_drive_equals_the_pipeline_on_the_original(own_drive, synth_bag, tiny_model_path):
    bag, params = own_drive
    runs = []
    for path, settings in ((bag, ReaderSettings.from_params_file(params)),
                           (synth_bag, ReaderSettings.from_params({"image_transport": "compressed"}))):
        [drive] = open_drives(path, settings)
        pipeline = BevPipeline.from_model(tiny_model_path, backend="onnxruntime", score_threshold=0.05)
        pipeline.set_rig(drive.rig)
        runs.append([pipeline.process(f.sensors).detections for f in drive.frames(pipeline.model_config)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.centers, b.centers)
