"""Re-record a bag under other topic names: a drive as another vehicle would bring it.

Messages are copied as raw CDR (rosbags), so the bytes are the original ones; only the
topic names change, and topics can be left out (e.g. the ground truth). The Autoware-style
names below are the example the tests and `benchmarks/bench_own_drives.py` use for "a
user's own drive": other topic names, the rig only in CameraInfo + tf_static, no labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from rosbags.rosbag2 import Reader, Writer

from bev_quant_ros.ros.detection_encoding import make_typestore

# the node's default (relative) topics -> an Autoware-style vehicle's names
AUTOWARE_CAMERAS = {"CAM_FRONT": "front", "CAM_FRONT_RIGHT": "front_right", "CAM_BACK_RIGHT": "back_right",
                    "CAM_BACK": "back", "CAM_BACK_LEFT": "back_left", "CAM_FRONT_LEFT": "front_left"}


def autoware_renames(compressed: bool) -> dict[str, str]:
    """The node's default topics (as recorded by `bev-quant synth`) -> the Autoware-style names."""
    suffix = "/compressed" if compressed else ""
    renames = {f"/{cam}/image_raw{suffix}": f"/sensing/camera/{name}/image_raw{suffix}"
               for cam, name in AUTOWARE_CAMERAS.items()}
    renames.update({f"/{cam}/camera_info": f"/sensing/camera/{name}/camera_info"
                    for cam, name in AUTOWARE_CAMERAS.items()})
    renames.update({"/lidar/points": "/sensing/lidar/top/pointcloud", "/odom": "/localization/kinematic_state"})
    return renames


def autoware_params(path: Path, compressed: bool) -> Path:
    """A node params file for the renamed topics (absolute names, as a vehicle's launch sets them)."""
    suffix = "/compressed" if compressed else ""
    images = [f"/sensing/camera/{name}/image_raw" for name in AUTOWARE_CAMERAS.values()]
    infos = [f"/sensing/camera/{name}/camera_info" for name in AUTOWARE_CAMERAS.values()]
    lines = ["/**:", "  ros__parameters:", f"    image_transport: {'compressed' if suffix else 'raw'}",
             f"    camera_image_topics: {images}", f"    camera_info_topics: {infos}",
             "    lidar_topic: /sensing/lidar/top/pointcloud", "    odom_topic: /localization/kinematic_state",
             "    use_sim_time: true"]
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def remap_bag(source: Path, target: Path, renames: Mapping[str, str], drop: frozenset[str] = frozenset()) -> Path:
    """Copy ``source`` to ``target`` with topics renamed and ``drop`` left out."""
    store = make_typestore()
    with Reader(source) as reader, Writer(target, version=9) as writer:
        connections = {}
        for c in reader.connections:
            if c.topic not in drop:
                connections[c.id] = writer.add_connection(renames.get(c.topic, c.topic), c.msgtype, typestore=store,
                                                          offered_qos_profiles=c.ext.offered_qos_profiles)
        for connection, timestamp, raw in reader.messages():
            if connection.id in connections:
                writer.write(connections[connection.id], timestamp, raw)
    return target
