"""How a drive is read: the node's own topic and sync configuration, from its params file.

Whatever the node is configured for (topic names one by one, transport, sync settings,
frame ids), the offline tools read a bag the same way: they load the same params file
(`--params`), validate it with the node's parameter table and resolve the topic names in
the namespace the node would run in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from bev_quant_ros.errors import ConfigError
from bev_quant_ros.ros.parameters import resolve_topic, validate
from bev_quant_ros.sim.ground_truth import GT_TOPIC

# parameters every ROS node has; a params file may set them, the drive reader ignores them
ROS_STANDARD_PARAMS = frozenset({"use_sim_time"})


def load_node_params(path: str | Path) -> dict[str, Any]:
    """The node's parameters in a ROS 2 params file (``/**`` or one node key), validated."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read params file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"params file {path} holds no node section (expected '/**: ros__parameters: ...')")
    sections = [section for section in doc.values() if isinstance(section, dict) and "ros__parameters" in section]
    if len(sections) != 1:
        raise ConfigError(f"params file {path} must hold exactly one node section with ros__parameters, "
                          f"found {len(sections)}")
    values = {k: v for k, v in (sections[0]["ros__parameters"] or {}).items() if k not in ROS_STANDARD_PARAMS}
    try:
        return validate(values)
    except ConfigError as exc:
        raise ConfigError(f"params file {path}: {exc}") from exc


@dataclass(frozen=True)
class ReaderSettings:
    """Absolute topic names and sync settings of the node, as the reader applies them to a bag."""

    image_topics: tuple[str, ...]  # per camera in model order, with /compressed for compressed transport
    camera_info_topics: tuple[str, ...]
    lidar_topic: str
    odom_topic: str
    tf_topic: str
    tf_static_topic: str
    ego_pose_source: str
    odom_frame_id: str
    output_frame_id: str
    sync_slop_s: float
    camera_timeout_s: float
    max_lidar_age_s: float
    rig_path: str  # the rig YAML used where the bag has no CameraInfo / tf_static for a camera
    ground_truth_topic: str = GT_TOPIC

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, namespace: str = "/",
                    ground_truth_topic: str = GT_TOPIC) -> "ReaderSettings":
        """From validated node parameters (None = the node's defaults), topics resolved in ``namespace``."""
        p = validate(params or {})
        suffix = "/compressed" if p["image_transport"] == "compressed" else ""

        def topic(name: str) -> str:
            return resolve_topic(name, namespace)

        return cls(image_topics=tuple(topic(t) + suffix for t in p["camera_image_topics"]),
                   camera_info_topics=tuple(map(topic, p["camera_info_topics"])),
                   lidar_topic=topic(p["lidar_topic"]), odom_topic=topic(p["odom_topic"]),
                   tf_topic=topic(p["tf_topic"]), tf_static_topic=topic(p["tf_static_topic"]),
                   ego_pose_source=p["ego_pose_source"], odom_frame_id=p["odom_frame_id"],
                   output_frame_id=p["output_frame_id"], sync_slop_s=p["sync_slop_s"],
                   camera_timeout_s=p["camera_timeout_s"], max_lidar_age_s=p["max_lidar_age_s"],
                   rig_path=p["rig_path"], ground_truth_topic=resolve_topic(ground_truth_topic, namespace))

    @classmethod
    def from_params_file(cls, path: str | Path | None, namespace: str = "/",
                         ground_truth_topic: str = GT_TOPIC) -> "ReaderSettings":
        """From the node's params file (None = the node's defaults)."""
        return cls.from_params(load_node_params(path) if path else None, namespace, ground_truth_topic)
