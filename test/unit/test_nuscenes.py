"""nuScenes in: a tiny dataroot the real devkit loads -> bag -> drive reader -> results JSON + devkit."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from bev_quant_ros.drives import nuscenes_cli
from bev_quant_ros.drives.nuscenes_bag import SAMPLE_TOKEN_TOPIC
from bev_quant_ros.drives.settings import ReaderSettings
from bev_quant_ros.drives.spec import open_drives
from bev_quant_ros.evaluation import cli as evaluate_cli
from bev_quant_ros.evaluation.nuscenes_results import devkit_metrics, results_json
from bev_quant_ros.evaluation.offline import EvaluationRun
from bev_quant_ros.perception.boxes import Boxes3D
from bev_quant_ros.perception.geometry import load_rig, pose_matrix
from bev_quant_ros.ros.detection_encoding import make_typestore
from bev_quant_ros.sim.ground_truth import GT_TOPIC
from nuscenes_fixture import SCENE, VERSION, build_dataroot

pytest.importorskip("nuscenes.eval.detection.evaluate",
                    reason="nuscenes-devkit not importable; install: pip install --no-deps nuscenes-devkit==1.2.0")
PARAMS = Path(__file__).resolve().parents[2] / "config" / "nuscenes.param.yaml"


def command(argv: list[str]) -> int:
    """Run a subcommand module's parser (nuscenes_cli is registered in bev_quant_ros/cli.py by the lead)."""
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    nuscenes_cli.register(subparsers)
    evaluate_cli.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    return build_dataroot(tmp_path_factory.mktemp("nuscenes"))


@pytest.fixture(scope="module")
def bags(dataroot, tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "out"
    assert command(["nuscenes-to-bag", "--dataroot", str(dataroot.dataroot), "--version", VERSION,
                    "--scene", SCENE, "--out", str(out)]) == 0
    return out


def read_bag(path):
    store = make_typestore()
    with Reader(path) as reader:
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]


def test_fixture_loads_in_the_real_devkit(dataroot):
    from nuscenes import NuScenes

    nusc = NuScenes(VERSION, str(dataroot.dataroot), verbose=False)
    assert [s["name"] for s in nusc.scene] == [SCENE] and len(nusc.sample) == 2
    assert len(nusc.sample_data) == 6 * dataroot.camera_frames + dataroot.lidar_sweeps == 53
    assert [len(s["anns"]) for s in nusc.sample] == list(dataroot.annotations_per_keyframe)


def test_bag_has_every_sweep_at_native_rate_and_the_original_bytes(dataroot, bags):
    messages = read_bag(bags / SCENE)
    stamps = [t for _, t, _ in messages]
    assert stamps == sorted(stamps)
    count = {topic: sum(1 for m in messages if m[0] == topic) for topic, _, _ in messages}
    assert count["/CAM_FRONT/image_raw/compressed"] == count["/CAM_BACK/camera_info"] == 7
    assert count["/lidar/points"] == 11 and count["/tf_static"] == 1
    assert count[GT_TOPIC] == count[SAMPLE_TOKEN_TOPIC] == 2
    camera_ns = [t for topic, t, _ in messages if topic == "/CAM_FRONT/image_raw/compressed"]
    assert np.allclose(np.diff(camera_ns) / 1e9, 1 / 12, atol=1e-6)  # 12 Hz
    lidar_ns = [t for topic, t, _ in messages if topic == "/lidar/points"]
    assert np.allclose(np.diff(lidar_ns) / 1e9, 0.05, atol=1e-6)  # 20 Hz
    first = next(m for topic, _, m in messages if topic == "/CAM_BACK_LEFT/image_raw/compressed")
    jpeg = sorted((dataroot.dataroot / "samples" / "CAM_BACK_LEFT").glob("*.jpg"))[0].read_bytes()
    assert first.format == "jpeg" and bytes(first.data) == jpeg
    cloud = next(m for topic, _, m in messages if topic == "/lidar/points")
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity", "ring"]
    assert bytes(cloud.data) == sorted((dataroot.dataroot / "samples" / "LIDAR_TOP").glob("*.bin"))[0].read_bytes()
    gt = [m for topic, _, m in messages if topic == GT_TOPIC]
    assert [len(m.detections) for m in gt] == list(dataroot.mapped_per_keyframe)  # the bus left out
    rig = load_rig()
    static = {t.child_frame_id: t.transform for t in next(m for topic, _, m in messages
                                                           if topic == "/tf_static").transforms}
    assert set(static) == {c.frame_id for c in rig.cameras} | {"lidar_top"}
    q = static["cam_front_right_optical"].rotation
    T = pose_matrix([static["cam_front_right_optical"].translation.x, static["cam_front_right_optical"].translation.y,
                     static["cam_front_right_optical"].translation.z], (q.x, q.y, q.z, q.w))
    np.testing.assert_allclose(T, rig.cameras[1].T_ego_cam, atol=1e-9)


def test_params_file_reads_the_bag_as_the_node(dataroot, bags):
    settings = ReaderSettings.from_params_file(PARAMS)
    assert settings.image_topics[0] == "/CAM_FRONT/image_raw/compressed" and settings.sync_slop_s == 0.05
    default = ReaderSettings.from_params()
    assert settings.lidar_topic == default.lidar_topic and settings.odom_topic == default.odom_topic
    (drive,) = open_drives(bags, settings)
    assert drive.has_ground_truth and drive.rig.camera_names == load_rig().camera_names
    from tiny_model import tiny_config

    frames = list(drive.frames(tiny_config()))
    assert len(frames) == 7  # every camera set runs (the recurrent state needs them), 12 Hz
    keyframes = [f for f in frames if f.ground_truth is not None]
    assert [len(f.ground_truth) for f in keyframes] == list(dataroot.mapped_per_keyframe)
    assert all(f.sensors.lidar_stamp_ns == f.sensors.stamp_ns for f in keyframes)  # keyframe sweep, 40 ms spread


def jittered(truth: Boxes3D, rng: np.random.Generator) -> Boxes3D:
    """Detections near the ground truth: every box moved, some dropped, scores random."""
    keep = rng.random(len(truth)) > 0.2
    boxes = truth.select(keep)
    n = len(boxes)
    return Boxes3D(boxes.centers + rng.normal(0, 0.6, (n, 3)), boxes.sizes * rng.uniform(0.8, 1.2, (n, 3)),
                   boxes.yaws + rng.normal(0, 0.2, n), np.nan_to_num(boxes.velocities) + rng.normal(0, 0.5, (n, 2)),
                   boxes.class_names, rng.random(n))


def test_our_per_class_ap_is_the_devkits(dataroot, bags, tmp_path):
    from tiny_model import tiny_config

    settings = ReaderSettings.from_params_file(PARAMS)
    (drive,) = open_drives(bags, settings)
    rng = np.random.default_rng(3)
    frames = list(drive.frames(tiny_config()))
    frames = [f for f in frames if f.ground_truth is not None]
    run = EvaluationRun(predictions=[jittered(f.ground_truth, rng) for f in frames],
                        ground_truth=[f.ground_truth for f in frames],
                        stamps_ns=[f.sensors.stamp_ns for f in frames], gt_num_lidar_points=[None] * len(frames))
    results, _, scenes = results_json([drive.path], [run], settings)
    assert len(results["results"]) == 2 and scenes == [SCENE]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    devkit = devkit_metrics(dataroot.dataroot, VERSION, scenes, path)
    ours = run.metrics()
    for name in ours.class_names:
        for th, ap in ours.label_aps[name].items():
            assert ap == pytest.approx(devkit["label_aps"][name][th], abs=1e-6), (name, th)
    assert 0.1 < ours.mean_ap < 1.0  # a test with signal: neither all found nor none
    assert devkit["label_aps"]["bus"][2.0] == 0.0  # a class the model lacks: AP 0 in the devkit's mean


def test_evaluate_writes_results_and_prints_the_devkit(dataroot, bags, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert command(["evaluate", "--data", str(bags), "--params", str(PARAMS), "--model", str(tiny_model_path),
                    "--nuscenes-results", str(out), "--devkit", str(dataroot.dataroot)]) == 0
    printed = capsys.readouterr().out
    assert "nuscenes-devkit (detection_cvpr_2019)" in printed and "devkit mAAE" in printed
    results = json.loads(out.read_text())
    assert len(results["results"]) == 2 and results["meta"]["use_camera"] is True


@pytest.mark.parametrize("damage", ["table", "file", "scene"])
def test_bad_dataroot_is_exit_2_with_one_line_and_no_output(dataroot, tmp_path, capsys, damage):
    root = tmp_path / "root"
    shutil.copytree(dataroot.dataroot, root)
    scene = SCENE
    if damage == "table":
        (root / VERSION / "ego_pose.json").unlink()
    elif damage == "file":
        next((root / "sweeps" / "CAM_BACK").glob("*.jpg")).unlink()
    else:
        scene = "scene-9999"
    out = tmp_path / "out"
    assert command(["nuscenes-to-bag", "--dataroot", str(root), "--scene", scene, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert {"table": "ego_pose.json", "file": "CAM_BACK", "scene": "scene-9999"}[damage] in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))
