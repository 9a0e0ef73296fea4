"""Write simulated frames as a rosbag2 bag (rosbags; mcap by default, sqlite3 optional).

Topics (bag receive time = camera trigger stamp of the frame; header stamps carry sensor times):

| topic | type | when |
|---|---|---|
| ``/<CAM>/image_raw`` | sensor_msgs/Image rgb8 | every frame (or ``.../compressed`` CompressedImage jpeg) |
| ``/<CAM>/camera_info`` | sensor_msgs/CameraInfo | every frame |
| ``/lidar/points`` | sensor_msgs/PointCloud2 x,y,z,intensity,t float32 | each new sweep, stamp = sweep end |
| ``/odom`` | nav_msgs/Odometry odom -> base_link | every frame |
| ``/tf`` | tf2_msgs/TFMessage odom -> base_link | every frame |
| ``/tf_static`` | tf2_msgs/TFMessage base_link -> cameras, lidar | once, transient-local QoS |
| ``/ground_truth/objects`` | vision_msgs/Detection3DArray | every frame (see ground_truth.py) |

The bag is written, under its final name, inside a hidden sibling directory and
renamed into place only when complete, so an interrupted run never leaves a bag
that looks valid; the final name already while writing because rosbags names the
data file (``<name>.mcap`` / ``<name>.db3``, in metadata.yaml) after the bag directory.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.perception.geometry import Rig, matrix_to_translation_quaternion
from bev_quant_ros.ros.bag_types import make_header
from bev_quant_ros.ros.detection_encoding import (
    DETECTION3D_ARRAY,
    build_detection_array,
    make_typestore,
    rosbags_message_classes,
)
from bev_quant_ros.sim.frames import SimFrame
from bev_quant_ros.sim.ground_truth import GT_TOPIC

ODOM_FRAME, BASE_FRAME = "odom", "base_link"
LIDAR_TOPIC, ODOM_TOPIC = "/lidar/points", "/odom"
STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_NEVER = QosTime(0, 0)
TF_STATIC_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _NEVER,
                     _NEVER, QosLiveliness.AUTOMATIC, _NEVER, False)
_POINT_FIELDS = ("x", "y", "z", "intensity", "t")


@dataclass
class BagSummary:
    path: Path
    frames: int
    objects: int
    size_mb: float
    seconds: float


def image_topic(camera: str, compressed: bool) -> str:
    return f"/{camera}/image_raw/compressed" if compressed else f"/{camera}/image_raw"


def check_bag_output(out: Path) -> None:
    """ConfigError unless a bag can be created at ``out`` (absent or an empty directory, writable parent)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} exists and is not an empty directory")
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write into {parent}: not a writable directory")


@contextmanager
def staged_bag_dir(out: Path) -> Iterator[Path]:
    """The path to write a bag to: inside a hidden sibling directory, renamed to ``out`` only when
    the block completes, so an error never leaves a bag that looks valid (see module docstring)."""
    check_bag_output(out)
    staging = out.resolve().parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging / out.name
        if out.exists():
            out.rmdir()
        (staging / out.name).rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bag(out_dir: str | Path, frames: Iterable[SimFrame], rig: Rig, compressed: bool = False,
              storage: str = "mcap", jpeg_quality: int = 90) -> BagSummary:
    """Write ``frames`` to a new bag at ``out_dir`` (must not exist, or be an empty directory)."""
    out = Path(out_dir)
    if storage not in STORAGE_PLUGINS:
        raise ConfigError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGE_PLUGINS)}")
    start = time.perf_counter()
    with staged_bag_dir(out) as path:
        frame_count, object_count = _write(path, frames, rig, compressed, STORAGE_PLUGINS[storage], jpeg_quality)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return BagSummary(out, frame_count, object_count, size / 1e6, time.perf_counter() - start)


def _write(path: Path, frames: Iterable[SimFrame], rig: Rig, compressed: bool, plugin: StoragePlugin,
           jpeg_quality: int) -> tuple[int, int]:
    store = make_typestore()
    t = store.types
    detection_classes = rosbags_message_classes(store)
    frame_count = object_count = 0
    last_sweep: int | None = None
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        def conn(topic: str, msgtype: str, qos: tuple[Qos, ...] = ()):
            return writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)

        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        cams = [(cam, conn(image_topic(cam.name, compressed), image_type),
                 conn(f"/{cam.name}/camera_info", "sensor_msgs/msg/CameraInfo")) for cam in rig.cameras]
        c_lidar = conn(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2")
        c_odom = conn(ODOM_TOPIC, "nav_msgs/msg/Odometry")
        c_tf = conn("/tf", "tf2_msgs/msg/TFMessage")
        c_tf_static = conn("/tf_static", "tf2_msgs/msg/TFMessage", (TF_STATIC_QOS,))
        c_gt = conn(GT_TOPIC, DETECTION3D_ARRAY)

        def write(connection, stamp_ns: int, msg) -> None:
            writer.write(connection, stamp_ns, store.serialize_cdr(msg, connection.msgtype))

        for frame in frames:
            ns = frame.stamp_ns
            if frame_count == 0:
                statics = [transform_message(store, ns, BASE_FRAME, cam.frame_id, cam.T_ego_cam) for cam in rig.cameras]
                statics.append(transform_message(store, ns, BASE_FRAME, rig.lidar_frame_id, rig.T_ego_lidar))
                write(c_tf_static, ns, t["tf2_msgs/msg/TFMessage"](transforms=statics))
            write(c_tf, ns, t["tf2_msgs/msg/TFMessage"](
                transforms=[transform_message(store, ns, ODOM_FRAME, BASE_FRAME, frame.ego_pose)]))
            write(c_odom, ns, _odometry(store, frame))
            if frame.lidar_stamp_ns != last_sweep:
                write(c_lidar, ns, _pointcloud(store, frame.points, frame.lidar_stamp_ns, rig.lidar_frame_id))
                last_sweep = frame.lidar_stamp_ns
            for (cam, c_image, c_info), image in zip(cams, frame.images):
                header = make_header(store, ns, cam.frame_id)
                write(c_info, ns, camera_info_message(store, cam, header))
                write(c_image, ns, _compressed(store, image, header, jpeg_quality) if compressed
                      else _image(store, image, header))
            track_ids = [str(int(track)) for track in frame.gt_track_ids]
            write(c_gt, ns, build_detection_array(detection_classes, frame.gt, track_ids, ns, BASE_FRAME))
            frame_count += 1
            object_count += len(frame.gt)
    return frame_count, object_count


def pose_message(store, T: np.ndarray):
    t = store.types
    p, q = matrix_to_translation_quaternion(T)
    return t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))


def transform_message(store, stamp_ns: int, parent: str, child: str, T_parent_child: np.ndarray):
    t = store.types
    p, q = matrix_to_translation_quaternion(T_parent_child)
    return t["geometry_msgs/msg/TransformStamped"](
        header=make_header(store, stamp_ns, parent), child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=p[0], y=p[1], z=p[2]),
            rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))


def _odometry(store, frame: SimFrame):
    t = store.types
    v = frame.ego_velocity
    vec = t["geometry_msgs/msg/Vector3"]
    twist = t["geometry_msgs/msg/Twist"](linear=vec(x=v[0], y=v[1], z=v[2]), angular=vec(x=0.0, y=0.0, z=0.0))
    return t["nav_msgs/msg/Odometry"](
        header=make_header(store, frame.stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose_message(store, frame.ego_pose),
                                                       covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))


def _pointcloud(store, points: np.ndarray, stamp_ns: int, frame_id: str):
    t = store.types
    Field = t["sensor_msgs/msg/PointField"]
    fields = [Field(name=name, offset=4 * i, datatype=Field.FLOAT32, count=1) for i, name in enumerate(_POINT_FIELDS)]
    data = np.ascontiguousarray(points, dtype="<f4").view(np.uint8).reshape(-1)
    return t["sensor_msgs/msg/PointCloud2"](
        header=make_header(store, stamp_ns, frame_id), height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=4 * len(_POINT_FIELDS), row_step=4 * len(_POINT_FIELDS) * len(points), data=data, is_dense=True)


def camera_info_message(store, cam, header):
    t = store.types
    P = np.zeros((3, 4))
    P[:, :3] = cam.K
    return t["sensor_msgs/msg/CameraInfo"](
        header=header, height=cam.height, width=cam.width, distortion_model="plumb_bob", d=np.zeros(5),
        k=cam.K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _image(store, image: np.ndarray, header):
    h, w = image.shape[:2]
    return store.types["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                                step=3 * w, data=np.ascontiguousarray(image).reshape(-1))


def _compressed(store, image: np.ndarray, header, quality: int):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return store.types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=buf.reshape(-1))
