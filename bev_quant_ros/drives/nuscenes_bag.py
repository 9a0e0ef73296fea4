"""nuScenes scenes -> rosbag2 bags the node (and the drive reader) reads as they are.

One bag per scene, every sweep at its native rate (cameras 12 Hz, LIDAR_TOP 20 Hz), in time
order; bag time = header stamp = the sample_data timestamp (µs -> ns):

| topic | type | what |
|---|---|---|
| ``/<CAM>/image_raw/compressed`` | sensor_msgs/CompressedImage | the original JPEG bytes (never re-encoded) |
| ``/<CAM>/camera_info`` | sensor_msgs/CameraInfo | with every image: K = camera_intrinsic, no distortion |
| ``/lidar/points`` | sensor_msgs/PointCloud2 | the .pcd.bin bytes as is: x, y, z, intensity, ring float32 |
| ``/odom``, ``/tf`` | nav_msgs/Odometry, TFMessage | ego_pose of every sample_data, ``odom`` = nuScenes global |
| ``/tf_static`` | tf2_msgs/TFMessage | base_link -> each sensor from calibrated_sensor |
| ``/ground_truth/objects`` | vision_msgs/Detection3DArray | keyframes (detection_encoding.py) |
| ``/nuscenes/sample_token`` | std_msgs/String | keyframes: the sample token |

Frames: nuScenes' ego frame is REP-103 base_link, and a camera's calibrated_sensor already is
its optical frame (x right, y down, z forward), so ``T_ego_cam`` is taken as is; frame ids are
``<channel lower case>_optical`` (``cam_front_optical``, as in config/rig_nuscenes.yaml) and
``lidar_top``.

Keyframe stamp: the node stamps a camera set with its *earliest* camera stamp
(FrameAssembler), and the cameras of one sample differ by up to ~40 ms, so the ground truth and
the sample token of a keyframe are stamped with the earliest of its six camera timestamps
(CAM_FRONT on real data) and the boxes are in the ego frame of that camera's ego_pose. A String
has no header: the token message's bag time is that stamp. The bag's metadata custom_data holds
``nuscenes_version`` and ``nuscenes_scene`` (evaluation/nuscenes_results.py reads both).

Classes (:data:`CATEGORY_TO_CLASS`): the devkit's own category -> detection-class table
(``category_to_detection_name``) restricted to the model's CLASS_NAMES, so our per-class numbers
are the devkit's: vehicle.car -> car, vehicle.truck -> truck, human.pedestrian.{adult, child,
construction_worker, police_officer} -> pedestrian, vehicle.bicycle -> bicycle,
movable_object.trafficcone -> traffic_cone. bus, trailer, construction_vehicle, motorcycle and
barrier are left out of the ground truth: folding bus/trailer into truck (or motorcycle into
bicycle) would make our truck AP a different number from the devkit's truck AP.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from rosbags.rosbag2 import Writer
from tqdm import tqdm

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.perception.boxes import CLASS_NAMES, Boxes3D
from bev_quant_ros.perception.geometry import CameraModel, invert_transform, pose_matrix
from bev_quant_ros.ros.bag_types import make_header
from bev_quant_ros.ros.detection_encoding import (
    DETECTION3D_ARRAY,
    build_detection_array,
    make_typestore,
    rosbags_message_classes,
)
from bev_quant_ros.ros.parameters import DEFAULT_CAMERA_NAMES
from bev_quant_ros.sim.bag_writer import (
    BASE_FRAME,
    LIDAR_TOPIC,
    ODOM_FRAME,
    ODOM_TOPIC,
    STORAGE_PLUGINS,
    TF_STATIC_QOS,
    camera_info_message,
    image_topic,
    pose_message,
    staged_bag_dir,
    transform_message,
)
from bev_quant_ros.sim.ground_truth import GT_TOPIC

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_FRAME = "lidar_top"
SAMPLE_TOKEN_TOPIC = "/nuscenes/sample_token"
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
US_TO_NS = 1000
_POINT_FIELDS = ("x", "y", "z", "intensity", "ring")  # .pcd.bin: 5 float32 per point


def _category_table() -> dict[str, str]:
    from nuscenes.eval.detection.utils import category_to_detection_name

    names = ("vehicle.car", "vehicle.truck", "human.pedestrian.adult", "human.pedestrian.child",
             "human.pedestrian.construction_worker", "human.pedestrian.police_officer", "vehicle.bicycle",
             "movable_object.trafficcone", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.trailer",
             "vehicle.construction", "vehicle.motorcycle", "movable_object.barrier")
    return {n: category_to_detection_name(n) for n in names if category_to_detection_name(n) in CLASS_NAMES}


CATEGORY_TO_CLASS: dict[str, str] = _category_table()


@dataclass
class SceneSummary:
    path: Path
    scene: str
    keyframes: int
    objects: int
    messages: dict[str, int]
    seconds: float


def open_nuscenes(dataroot: str | Path, version: str) -> Any:
    """The real devkit ``NuScenes``; ConfigError naming a missing table (never the devkit's assert)."""
    from nuscenes import NuScenes

    table_root = Path(dataroot) / version
    if not table_root.is_dir():
        raise ConfigError(f"nuScenes dataroot {dataroot} has no version directory {version}/")
    missing = [t for t in TABLES if not (table_root / f"{t}.json").is_file()]
    if missing:
        raise ConfigError(f"nuScenes dataroot {dataroot}: table {table_root / (missing[0] + '.json')} is missing")
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"nuScenes dataroot {dataroot} ({version}) does not load: "
                          f"{type(exc).__name__}: {exc}") from exc


def select_scenes(nusc: Any, names: list[str] | None) -> list[dict[str, Any]]:
    """Scene records by name (None = every scene); ConfigError naming an unknown one."""
    by_name = {s["name"]: s for s in nusc.scene}
    if names is None:
        return sorted(by_name.values(), key=lambda s: s["name"])
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown scene {unknown[0]} (the dataroot has {', '.join(sorted(by_name))})")
    return [by_name[n] for n in names]


def scene_sample_data(nusc: Any, scene: dict[str, Any]) -> list[dict[str, Any]]:
    """Every camera and LIDAR_TOP sample_data of ``scene`` (keyframes and sweeps), in time order."""
    first = nusc.get("sample", scene["first_sample_token"])
    records = []
    for channel in (*DEFAULT_CAMERA_NAMES, LIDAR_CHANNEL):
        if channel not in first["data"]:
            raise ConfigError(f"scene {scene['name']}: no {channel} sample_data")
        sd = nusc.get("sample_data", first["data"][channel])
        while sd["prev"] and _scene_of(nusc, nusc.get("sample_data", sd["prev"])) == scene["token"]:
            sd = nusc.get("sample_data", sd["prev"])
        while sd is not None:
            records.append(sd)
            sd = nusc.get("sample_data", sd["next"]) if sd["next"] else None
            if sd is not None and _scene_of(nusc, sd) != scene["token"]:
                sd = None
    records.sort(key=lambda r: (r["timestamp"], r["channel"]))
    for r in records:
        if not os.path.isfile(os.path.join(nusc.dataroot, r["filename"])):
            raise ConfigError(f"scene {scene['name']}: file {os.path.join(nusc.dataroot, r['filename'])} is missing")
    return records


def _scene_of(nusc: Any, sd: dict[str, Any]) -> str:
    return nusc.get("sample", sd["sample_token"])["scene_token"]


def ego_matrix(nusc: Any, sd: dict[str, Any]) -> np.ndarray:
    """T_global_ego of a sample_data (its own ego_pose)."""
    return _record_matrix(nusc.get("ego_pose", sd["ego_pose_token"]))


def _record_matrix(record: dict[str, Any]) -> np.ndarray:
    w, x, y, z = record["rotation"]  # nuScenes quaternions are (w, x, y, z)
    return pose_matrix(record["translation"], (x, y, z, w))


def keyframe_reference(nusc: Any, sample: dict[str, Any]) -> dict[str, Any]:
    """The camera sample_data of a keyframe with the earliest timestamp (the node's set stamp)."""
    return min((nusc.get("sample_data", sample["data"][c]) for c in DEFAULT_CAMERA_NAMES),
               key=lambda sd: sd["timestamp"])


def keyframe_ground_truth(nusc: Any, sample: dict[str, Any], T_global_ego: np.ndarray) -> tuple[Boxes3D, list[str]]:
    """The sample's annotations of mapped classes in the ego frame of ``T_global_ego``, and their
    instance tokens (the Detection3D ids)."""
    T_ego_global = invert_transform(T_global_ego)
    R = T_ego_global[:3, :3]
    centers, sizes, yaws, velocities, names, ids = [], [], [], [], [], []
    for token in sample["anns"]:
        ann = nusc.get("sample_annotation", token)
        name = CATEGORY_TO_CLASS.get(ann["category_name"])
        if name is None:
            continue
        box = _record_matrix(ann)
        rot = R @ box[:3, :3]
        centers.append(R @ box[:3, 3] + T_ego_global[:3, 3])
        w, length, h = ann["size"]  # nuScenes: width, length, height
        sizes.append((length, w, h))
        yaws.append(np.arctan2(rot[1, 0], rot[0, 0]))
        velocities.append((R @ nusc.box_velocity(token))[:2])  # NaN stays NaN where the devkit has none
        names.append(name)
        ids.append(ann["instance_token"])
    n = len(names)
    return Boxes3D(np.array(centers, float).reshape(n, 3), np.array(sizes, float).reshape(n, 3),
                   np.array(yaws, float).reshape(n), np.array(velocities, float).reshape(n, 2), names), ids


def convert_scene(nusc: Any, scene: dict[str, Any], out: Path, progress: bool = True) -> SceneSummary:
    """Write ``scene`` as a bag at ``out`` (absent or empty; staged, renamed when complete)."""
    start = time.perf_counter()
    records = scene_sample_data(nusc, scene)
    with staged_bag_dir(out) as path:
        counts, keyframes, objects = _write(nusc, scene, records, path, progress)
    return SceneSummary(out, scene["name"], keyframes, objects, counts, time.perf_counter() - start)


def _keyframes(nusc: Any, scene: dict[str, Any]) -> Iterator[dict[str, Any]]:
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        yield sample
        token = sample["next"]


def _write(nusc: Any, scene: dict[str, Any], records: list[dict[str, Any]], path: Path,
           progress: bool) -> tuple[dict[str, int], int, int]:
    store = make_typestore()
    t = store.types
    detection_classes = rosbags_message_classes(store)
    keyframe_at = {}  # reference camera sample_data token -> sample
    for sample in _keyframes(nusc, scene):
        keyframe_at[keyframe_reference(nusc, sample)["token"]] = sample
    counts: dict[str, int] = {}
    objects = 0
    with Writer(path, version=9, storage_plugin=STORAGE_PLUGINS["mcap"]) as writer:
        writer.set_custom_data("nuscenes_version", nusc.version)
        writer.set_custom_data("nuscenes_scene", scene["name"])
        connections: dict[str, Any] = {}

        def write(topic: str, msgtype: str, stamp_ns: int, msg: Any, qos: tuple = ()) -> None:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)
            writer.write(connections[topic], stamp_ns, store.serialize_cdr(msg, msgtype))
            counts[topic] = counts.get(topic, 0) + 1

        first_ns = records[0]["timestamp"] * US_TO_NS
        write("/tf_static", "tf2_msgs/msg/TFMessage", first_ns, t["tf2_msgs/msg/TFMessage"](
            transforms=[transform_message(store, first_ns, BASE_FRAME, frame, T) for frame, T in
                        _sensor_mounts(nusc, records).items()]), (TF_STATIC_QOS,))
        last_pose_ns = None
        for sd in tqdm(records, unit="msg", desc=scene["name"], disable=not progress, mininterval=1.0):
            ns = sd["timestamp"] * US_TO_NS
            T_global_ego = ego_matrix(nusc, sd)
            if ns != last_pose_ns:  # one pose per stamp (sensors may share one)
                write("/tf", "tf2_msgs/msg/TFMessage", ns, t["tf2_msgs/msg/TFMessage"](
                    transforms=[transform_message(store, ns, ODOM_FRAME, BASE_FRAME, T_global_ego)]))
                write(ODOM_TOPIC, "nav_msgs/msg/Odometry", ns, _odometry(store, ns, T_global_ego))
                last_pose_ns = ns
            data = np.fromfile(os.path.join(nusc.dataroot, sd["filename"]), dtype=np.uint8)
            if sd["channel"] == LIDAR_CHANNEL:
                write(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2", ns, _pointcloud(store, data, ns))
                continue
            camera = _camera(nusc, sd)
            header = make_header(store, ns, camera.frame_id)
            write(f"/{camera.name}/camera_info", "sensor_msgs/msg/CameraInfo", ns,
                  camera_info_message(store, camera, header))
            write(image_topic(camera.name, compressed=True), "sensor_msgs/msg/CompressedImage", ns,
                  t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=data))
            sample = keyframe_at.get(sd["token"])
            if sample is not None:
                boxes, ids = keyframe_ground_truth(nusc, sample, T_global_ego)
                write(GT_TOPIC, DETECTION3D_ARRAY, ns, build_detection_array(detection_classes, boxes, ids, ns,
                                                                            BASE_FRAME))
                write(SAMPLE_TOKEN_TOPIC, "std_msgs/msg/String", ns, t["std_msgs/msg/String"](data=sample["token"]))
                objects += len(boxes)
    return counts, len(keyframe_at), objects


def _frame_id(channel: str) -> str:
    return LIDAR_FRAME if channel == LIDAR_CHANNEL else f"{channel.lower()}_optical"


def _sensor_mounts(nusc: Any, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """base_link -> sensor frame of each channel (its first calibrated_sensor in the scene)."""
    mounts: dict[str, np.ndarray] = {}
    for sd in records:
        frame = _frame_id(sd["channel"])
        if frame not in mounts:
            mounts[frame] = _record_matrix(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
    return mounts


def _camera(nusc: Any, sd: dict[str, Any]) -> CameraModel:
    calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    return CameraModel(sd["channel"], int(sd["width"]), int(sd["height"]), np.array(calib["camera_intrinsic"], float),
                       _record_matrix(calib), _frame_id(sd["channel"]))


def _odometry(store: Any, stamp_ns: int, T_global_ego: np.ndarray) -> Any:
    """Pose only: nuScenes has no ego twist (the reader and the node take velocity from poses)."""
    t = store.types
    vec = t["geometry_msgs/msg/Vector3"]
    zero = vec(x=0.0, y=0.0, z=0.0)
    return t["nav_msgs/msg/Odometry"](
        header=make_header(store, stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose_message(store, T_global_ego), covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=t["geometry_msgs/msg/Twist"](linear=zero, angular=zero),
                                                         covariance=np.zeros(36)))


def _pointcloud(store: Any, data: np.ndarray, stamp_ns: int) -> Any:
    t = store.types
    step = 4 * len(_POINT_FIELDS)
    if data.size % step:
        raise ConfigError(f"lidar file of {data.size} bytes is not {len(_POINT_FIELDS)} float32 per point")
    Field = t["sensor_msgs/msg/PointField"]
    fields = [Field(name=name, offset=4 * i, datatype=Field.FLOAT32, count=1) for i, name in enumerate(_POINT_FIELDS)]
    return t["sensor_msgs/msg/PointCloud2"](
        header=make_header(store, stamp_ns, LIDAR_FRAME), height=1, width=data.size // step, fields=fields,
        is_bigendian=False, point_step=step, row_step=data.size, data=data, is_dense=True)

