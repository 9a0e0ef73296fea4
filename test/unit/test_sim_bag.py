"""Bag round trip (rosbags Reader, rclpy deserialization, ground-truth decoding) and `bev-quant synth` errors."""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from bev_quant_ros.perception.geometry import load_rig
from bev_quant_ros.ros.detection_encoding import make_typestore
from bev_quant_ros.sim import cli as synth_cli
from bev_quant_ros.sim import generate_frames
from bev_quant_ros.sim.bag_writer import write_bag
from bev_quant_ros.sim.ground_truth import read_ground_truth

CAMS = load_rig().camera_names
FRAMES = 4  # two lidar sweeps at 30/10 Hz


def _synth(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bev-quant")
    synth_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synth", *argv])
    return args.func(args)


def _storage(bag_dir) -> str:
    meta = yaml.safe_load((bag_dir / "metadata.yaml").read_text())
    return meta["rosbag2_bagfile_information"]["storage_identifier"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "day"
    assert _synth(["--out", str(out), "--frames", str(FRAMES), "--seed", "9", "--condition", "day"]) == 0
    return out


def test_topics_types_counts(bag, capsys):
    expected = {f"/{c}/image_raw": ("sensor_msgs/msg/Image", FRAMES) for c in CAMS}
    expected |= {f"/{c}/camera_info": ("sensor_msgs/msg/CameraInfo", FRAMES) for c in CAMS}
    expected |= {"/lidar/points": ("sensor_msgs/msg/PointCloud2", 2), "/odom": ("nav_msgs/msg/Odometry", FRAMES),
                 "/tf": ("tf2_msgs/msg/TFMessage", FRAMES), "/tf_static": ("tf2_msgs/msg/TFMessage", 1),
                 "/ground_truth/objects": ("vision_msgs/msg/Detection3DArray", FRAMES)}
    with Reader(bag) as reader:
        got = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        tf_static = next(c for c in reader.connections if c.topic == "/tf_static")
        assert tf_static.ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
    assert got == expected
    assert _storage(bag) == "mcap"


def test_bag_files_are_named_after_the_bag(bag):
    # rosbags names the data file after the directory it writes; the bag is staged under its final name
    names = sorted(p.name for p in bag.iterdir())
    assert names == ["day.mcap", "metadata.yaml"]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["relative_file_paths"] == ["day.mcap"]
    assert [f["path"] for f in meta["files"]] == ["day.mcap"]
    assert [p.name for p in bag.parent.iterdir()] == ["day"]  # no staging directory left beside it


def test_content_round_trip(bag):
    frames = list(generate_frames(9, "day", FRAMES))
    store = make_typestore()
    with Reader(bag) as reader:
        msgs: dict[str, list] = {}
        for conn, _, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append(store.deserialize_cdr(raw, conn.msgtype))
    img = msgs["/CAM_BACK/image_raw"][2]
    assert (img.encoding, img.height, img.width, img.step) == ("rgb8", 450, 800, 2400)
    np.testing.assert_array_equal(img.data.reshape(450, 800, 3), frames[2].images[3])
    cloud = msgs["/lidar/points"][1]
    pts = np.frombuffer(cloud.data.tobytes(), "<f4").reshape(-1, 5)
    np.testing.assert_array_equal(pts, frames[3].points)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "t"]
    assert cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec == frames[3].lidar_stamp_ns
    info = msgs["/CAM_FRONT/camera_info"][0]
    np.testing.assert_allclose(info.k.reshape(3, 3), load_rig().cameras[0].K)
    odom = msgs["/odom"][1]
    assert odom.twist.twist.linear.x == pytest.approx(frames[1].ego_velocity[0])
    assert len(msgs["/tf_static"][0].transforms) == 7
    gt = read_ground_truth(bag)
    assert sorted(gt) == [f.stamp_ns for f in frames]
    for f in frames:
        boxes = gt[f.stamp_ns]
        assert boxes.class_names == f.gt.class_names
        np.testing.assert_allclose(boxes.centers, f.gt.centers, atol=1e-9)
        np.testing.assert_allclose(boxes.sizes, f.gt.sizes)
        np.testing.assert_allclose(np.cos(boxes.yaws - f.gt.yaws), 1.0, atol=1e-9)
        np.testing.assert_allclose(boxes.velocities, f.gt.velocities, atol=1e-9)


def test_rclpy_deserializes_every_topic(bag):
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
               "sensor_msgs/msg/PointCloud2": PointCloud2, "nav_msgs/msg/Odometry": Odometry}
    optional = {"tf2_msgs/msg/TFMessage": ("tf2_msgs.msg", "TFMessage"),
                "vision_msgs/msg/Detection3DArray": ("vision_msgs.msg", "Detection3DArray")}
    missing = []
    for msgtype, (module, name) in optional.items():
        try:
            classes[msgtype] = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            missing.append(f"{module} not built: {exc}")
    seen = set()
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.msgtype in classes:
                msg = deserialize_message(bytes(raw), classes[conn.msgtype])
                seen.add(conn.msgtype)
                if conn.msgtype == "sensor_msgs/msg/PointCloud2":
                    assert msg.point_step == 20 and len(msg.data) == 20 * msg.width
                if conn.msgtype == "vision_msgs/msg/Detection3DArray":
                    det = msg.detections[0]
                    assert det.results[0].hypothesis.class_id in ("car", "truck", "pedestrian", "bicycle",
                                                                  "traffic_cone")
                    assert det.results[1].hypothesis.class_id == "velocity"
    assert seen == set(classes)
    if missing:
        pytest.skip(f"checked: {', '.join(sorted(seen))} deserialize with rclpy; not checked: " + "; ".join(missing))


def test_compressed_sqlite3(tmp_path):
    rig = load_rig()
    out = tmp_path / "rain"
    summary = write_bag(out, generate_frames(1, "rain", 2, rig), rig, compressed=True, storage="sqlite3")
    assert summary.frames == 2 and summary.objects > 20 and summary.size_mb < 3.0
    with Reader(out) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
    assert topics["/CAM_FRONT/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert _storage(out) == "sqlite3"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "rain.db3"]


@pytest.mark.parametrize("argv, message", [
    (["--frames", "2", "--condition", "snow"], "unknown condition 'snow'"),
    (["--frames", "-3"], "--frames must be a positive integer"),
    (["--frames", "2", "--storage", "rosbag1"], "unknown storage"),
])
def test_bad_arguments(tmp_path, capsys, argv, message):
    out = tmp_path / "bag"
    assert _synth(["--out", str(out), *argv]) != 0
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_or_unwritable_output(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert _synth(["--out", str(full), "--frames", "1"]) == 1
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _synth(["--out", str(blocker / "bag"), "--frames", "1"]) == 1
    assert "not a writable directory" in capsys.readouterr().err


def test_interrupted_write_leaves_nothing(tmp_path):
    rig = load_rig()

    def frames_then_crash():
        yield from generate_frames(0, "day", 1, rig)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_bag(tmp_path / "bag", frames_then_crash(), rig)
    assert list(tmp_path.iterdir()) == []
