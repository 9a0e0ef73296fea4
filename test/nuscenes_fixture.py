"""A tiny nuScenes-format dataroot (v1.0-mini layout) made from the simulator, for tests.

The real ``NuScenes('v1.0-mini', dataroot)`` loads it: the 13 JSON tables, a map mask PNG,
JPEGs and .pcd.bin files. One scene of ``KEYFRAMES`` samples 0.5 s apart; between them the
camera sweeps at 12 Hz and the lidar at 20 Hz. Camera i fires ``i * CAMERA_STAGGER_US`` after
the lidar (CAM_FRONT with it), so one sample's cameras spread 40 ms as on the car.
Annotations: the simulator's boxes with lidar returns, plus one bus (a class the model lacks).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bev_quant_ros.perception.geometry import load_rig, matrix_to_quaternion
from bev_quant_ros.ros.parameters import DEFAULT_CAMERA_NAMES
from bev_quant_ros.sim.frames import FrameGenerator

VERSION = "v1.0-mini"
SCENE = "scene-0103"
KEYFRAMES = 2
CAMERA_HZ, LIDAR_HZ, KEYFRAME_EVERY = 12, 20, 6  # camera frames per keyframe: 12 Hz / 2 Hz
CAMERA_STAGGER_US = 8_000
START_US = 1_532_402_927_000_000
CATEGORY_OF_CLASS = {"car": "vehicle.car", "truck": "vehicle.truck", "pedestrian": "human.pedestrian.adult",
                     "bicycle": "vehicle.bicycle", "traffic_cone": "movable_object.trafficcone"}
EXTRA_CATEGORIES = ("vehicle.bus.rigid",)


@dataclass(frozen=True)
class FixtureDataroot:
    dataroot: Path
    scene: str
    camera_frames: int  # sample_data per camera
    lidar_sweeps: int
    mapped_per_keyframe: tuple[int, ...]  # annotations of the model's classes, per keyframe
    annotations_per_keyframe: tuple[int, ...]


def token(*parts: object) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _wxyz(R: np.ndarray) -> list[float]:
    x, y, z, w = matrix_to_quaternion(R)
    return [float(w), float(x), float(y), float(z)]


def build_dataroot(root: Path, seed: int = 100_007) -> FixtureDataroot:
    """Write the dataroot under ``root`` (see module docstring)."""
    rig = load_rig()
    camera_frames = (KEYFRAMES - 1) * KEYFRAME_EVERY + 1
    duration_us = (KEYFRAMES - 1) * 500_000
    gen = FrameGenerator(seed, "day", rig, float(CAMERA_HZ), float(CAMERA_HZ))
    frames = [gen.frame(k) for k in range(camera_frames)]
    tables: dict[str, list[dict]] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    for name in (*CATEGORY_OF_CLASS.values(), *EXTRA_CATEGORIES):
        tables["category"].append({"token": token("category", name), "name": name, "description": name})
    tables["attribute"].append({"token": token("attribute", "vehicle.moving"), "name": "vehicle.moving",
                                "description": ""})
    tables["visibility"].append({"token": "4", "level": "v80-100", "description": "visible"})
    log_token, scene_token = token("log"), token("scene")
    tables["log"].append({"token": log_token, "logfile": "fixture", "vehicle": "sim", "date_captured": "2018-07-24",
                          "location": "singapore-onenorth"})
    map_file = f"maps/{token('map')}.png"
    (root / "maps").mkdir(parents=True)
    cv2.imwrite(str(root / map_file), np.zeros((8, 8), np.uint8))
    tables["map"].append({"token": token("map"), "log_tokens": [log_token], "category": "semantic_prior",
                          "filename": map_file})

    sample_times = [START_US + k * 500_000 for k in range(KEYFRAMES)]
    samples = [token("sample", k) for k in range(KEYFRAMES)]
    for k, (s, ts) in enumerate(zip(samples, sample_times)):
        tables["sample"].append({"token": s, "timestamp": ts, "scene_token": scene_token,
                                 "prev": samples[k - 1] if k else "",
                                 "next": samples[k + 1] if k + 1 < KEYFRAMES else ""})
    tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": KEYFRAMES, "name": SCENE,
                            "first_sample_token": samples[0], "last_sample_token": samples[-1],
                            "description": "simulated"})

    def add_sensor(channel: str, modality: str, T: np.ndarray, K: np.ndarray | None) -> str:
        sensor, calib = token("sensor", channel), token("calibrated_sensor", channel)
        tables["sensor"].append({"token": sensor, "channel": channel, "modality": modality})
        tables["calibrated_sensor"].append({"token": calib, "sensor_token": sensor,
                                            "translation": T[:3, 3].tolist(), "rotation": _wxyz(T[:3, :3]),
                                            "camera_intrinsic": K.tolist() if K is not None else []})
        return calib

    def add_chain(channel: str, calib: str, stamps_us: list[int], write_file) -> None:
        tokens = [token("sample_data", channel, i) for i in range(len(stamps_us))]
        for i, ts in enumerate(stamps_us):
            is_key = (ts - START_US - _offset_us(channel)) % 500_000 == 0
            folder = "samples" if is_key else "sweeps"
            ext, fileformat = (".pcd.bin", "pcd") if channel == "LIDAR_TOP" else (".jpg", "jpg")
            filename = f"{folder}/{channel}/{SCENE}__{channel}__{ts}{ext}"
            (root / folder / channel).mkdir(parents=True, exist_ok=True)
            height, width = write_file(i, root / filename)
            pose = token("ego_pose", channel, i)
            T = gen.world.ego_pose((ts - START_US) / 1e6)
            tables["ego_pose"].append({"token": pose, "timestamp": ts, "translation": T[:3, 3].tolist(),
                                       "rotation": _wxyz(T[:3, :3])})
            nearest = min(range(KEYFRAMES), key=lambda k: abs(sample_times[k] - ts))
            tables["sample_data"].append({
                "token": tokens[i], "sample_token": samples[nearest], "ego_pose_token": pose,
                "calibrated_sensor_token": calib, "timestamp": ts, "fileformat": fileformat, "is_key_frame": is_key,
                "height": height, "width": width, "filename": filename,
                "prev": tokens[i - 1] if i else "", "next": tokens[i + 1] if i + 1 < len(tokens) else ""})

    for c, camera in enumerate(rig.cameras):
        assert camera.name == DEFAULT_CAMERA_NAMES[c]
        calib = add_sensor(camera.name, "camera", camera.T_ego_cam, camera.K)

        def write_jpeg(i: int, path: Path, c: int = c) -> tuple[int, int]:
            image = frames[i].images[c]
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            return image.shape[0], image.shape[1]

        add_chain(camera.name, calib, [START_US + round(i * 1e6 / CAMERA_HZ) + _offset_us(camera.name)
                                       for i in range(camera_frames)], write_jpeg)
    lidar_sweeps = duration_us * LIDAR_HZ // 1_000_000 + 1
    lidar_calib = add_sensor("LIDAR_TOP", "lidar", rig.T_ego_lidar, None)

    def write_points(i: int, path: Path) -> tuple[int, int]:
        points = frames[round(i * CAMERA_HZ / LIDAR_HZ)].points
        ring = np.zeros((len(points), 1), np.float32)
        np.concatenate([points[:, :4], ring], axis=1).astype("<f4").tofile(path)
        return 0, 0

    add_chain("LIDAR_TOP", lidar_calib, [START_US + round(i * 1e6 / LIDAR_HZ) for i in range(lidar_sweeps)],
              write_points)

    mapped, total = _annotate(tables, frames, samples)
    version_dir = root / VERSION
    version_dir.mkdir()
    for name, rows in tables.items():
        (version_dir / f"{name}.json").write_text(json.dumps(rows))
    return FixtureDataroot(root, SCENE, camera_frames, lidar_sweeps, mapped, total)


def _offset_us(channel: str) -> int:
    return DEFAULT_CAMERA_NAMES.index(channel) * CAMERA_STAGGER_US if channel in DEFAULT_CAMERA_NAMES else 0


def _annotate(tables: dict[str, list[dict]], frames: list, samples: list[str]
              ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """sample_annotation + instance rows from the keyframes' simulated boxes (with lidar returns)."""
    by_instance: dict[str, list[dict]] = {}
    mapped, total = [], []
    for k, sample in enumerate(samples):
        frame = frames[k * KEYFRAME_EVERY]
        T = frame.ego_pose
        keep = np.nonzero(frame.gt_num_lidar_points > 0)[0]
        rows = []
        for i in keep:
            center = T[:3, :3] @ frame.gt.centers[i] + T[:3, 3]
            c, s = np.cos(frame.gt.yaws[i]), np.sin(frame.gt.yaws[i])
            R = T[:3, :3] @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            length, width, height = frame.gt.sizes[i]
            rows.append((str(frame.gt_track_ids[i]), CATEGORY_OF_CLASS[frame.gt.class_names[i]], center, R,
                         [width, length, height], int(frame.gt_num_lidar_points[i])))
        bus_center = T[:3, :3] @ np.array([-20.0, 25.0, 1.6]) + T[:3, 3]
        rows.append(("bus", EXTRA_CATEGORIES[0], bus_center, T[:3, :3], [2.9, 11.0, 3.2], 50))
        for track, category, center, R, size, points in rows:
            instance = token("instance", track)
            record = {"token": token("annotation", track, k), "sample_token": sample, "instance_token": instance,
                      "visibility_token": "4", "attribute_tokens": [], "translation": center.tolist(), "size": size,
                      "rotation": _wxyz(R), "prev": "", "next": "", "num_lidar_pts": points, "num_radar_pts": 0,
                      "category": category}
            by_instance.setdefault(instance, []).append(record)
        mapped.append(len(rows) - 1)
        total.append(len(rows))
    for instance, records in by_instance.items():
        for a, b in zip(records, records[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        category = records[0].pop("category")
        for r in records[1:]:
            r.pop("category")
        tables["instance"].append({"token": instance, "category_token": token("category", category),
                                   "nbr_annotations": len(records), "first_annotation_token": records[0]["token"],
                                   "last_annotation_token": records[-1]["token"]})
        tables["sample_annotation"] += records
    return tuple(mapped), tuple(total)
