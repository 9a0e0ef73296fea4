"""`BagPlayer`: replays a rosbag2 through rclpy publishers, forwarding the raw CDR bytes.

Publishing the bag's bytes as they are (``publisher.publish(raw)``) skips deserializing
and re-serializing, which is what lets one Python thread keep up with six camera streams.
Each topic still gets a publisher of its real message class, so subscribers match it by
type name and type hash; the hash the bag recorded is checked against the installed one.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Sequence

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from bev_quant_ros.errors import BagError, ConfigError
from bev_quant_ros.replay.bag_source import LATCHED_TOPICS, BagSource, BagTopic, prefetched
from bev_quant_ros.replay.player import MonotonicWaiter, PlaybackConfig, PlaybackStats, PlaybackSummary, play_records

RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
DEFAULT_DEPTH = 10
# Camera/lidar messages are megabytes: a subscriber that stalls for a moment must not lose
# them to a short history, so these keep about a second of a 30 Hz stream queued.
LARGE_SENSOR_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
                                "sensor_msgs/msg/PointCloud2"})
LARGE_SENSOR_DEPTH = 30
ACK_TIMEOUT_S = 2.0  # at the end, wait this long for reliable subscribers to take the last messages
ACK_SLICE_S = 0.05
DISCOVERY_SETTLE_S = 0.5
PREFETCH_DEPTH = 12  # messages read ahead: two frames of a six-camera rig (~50 MB at 900×1600)


def message_class(msgtype: str) -> type:
    """The rclpy class of ``pkg/msg/Name``; BagError naming the package when it is missing."""
    package, kind, name = (msgtype.split("/") + ["", ""])[:3]
    if kind != "msg" or not package or not name:
        raise BagError(f"unsupported message type name {msgtype!r} (expected 'package/msg/Name')")
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError as error:
        raise BagError(f"message type {msgtype} is not importable: Python package '{package}' is "
                       f"missing ({error}); install or source the ROS package that provides it") from error
    cls = getattr(module, name, None)
    if cls is None:
        raise BagError(f"message type {msgtype} is not importable: '{package}.msg' has no '{name}' "
                       f"(installed {package} is a different version than the one recorded)")
    return cls


def topic_qos(topic: BagTopic, reliability: str, latched_depth: int) -> QoSProfile:
    """QoS of one replayed topic: latched ones transient-local, large sensor data deeper."""
    if topic.name in LATCHED_TOPICS:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, latched_depth),
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    depth = LARGE_SENSOR_DEPTH if topic.msgtype in LARGE_SENSOR_TYPES else DEFAULT_DEPTH
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABILITY[reliability])


class _RosSink:
    """The player's output: one publisher per topic plus /clock."""

    def __init__(self, publishers: dict[str, Publisher], clock: Publisher | None) -> None:
        self._publishers, self._clock = publishers, clock

    def publish(self, topic: str, raw: bytes) -> None:
        self._publishers[topic].publish(raw)

    def publish_clock(self, stamp_ns: int) -> None:
        message = Clock()
        message.clock.sec, message.clock.nanosec = divmod(stamp_ns, 10**9)
        self._clock.publish(message)


class BagPlayer:
    """Replays a bag on a node with recorded timing; see `play`.

    The bag is opened and every message class resolved here, so a bad bag, rate, topic
    or missing message package fails before anything is published.
    """

    def __init__(self, bag_dir: str | Path, rate: float = 1.0, loop: bool = False,
                 topics: Sequence[str] | None = None, *, start_offset_s: float = 0.0,
                 clock_hz: float = 100.0, reliability: str = "reliable",
                 wait_for_subscribers_s: float = 0.0) -> None:
        self.config = PlaybackConfig(rate=rate, loop=loop, clock_hz=clock_hz)
        if reliability not in RELIABILITY:
            raise ConfigError(f"reliability must be one of {sorted(RELIABILITY)}, got {reliability!r}")
        if not wait_for_subscribers_s >= 0:
            raise ConfigError(f"wait for subscribers must be >= 0 s, got {wait_for_subscribers_s}")
        self._reliability, self._wait_for_subscribers_s = reliability, wait_for_subscribers_s
        self.source = BagSource(bag_dir, topics, start_offset_s)
        try:
            self._classes = {name: message_class(t.msgtype) for name, t in self.source.topics.items()}
        except BagError:
            self.source.close()
            raise

    def play(self, node: Node, stop_event: threading.Event | None = None) -> PlaybackSummary:
        """Publish the bag on ``node`` until it ends (or, looping, until ``stop_event`` is set).

        Latched topics go out first, all of their messages; then the timed stream. The
        publishers are destroyed at the end, after reliable subscribers acknowledged.
        """
        stop_event = stop_event or threading.Event()
        latched = self.source.latched_records()
        publishers = {name: node.create_publisher(self._classes[name], name,
                                                  topic_qos(topic, self._reliability, len(latched)))
                      for name, topic in self.source.topics.items()}
        clock = (node.create_publisher(Clock, "/clock", QoSProfile(depth=DEFAULT_DEPTH))
                 if self.config.clock_hz > 0 else None)
        try:
            self._check_type_hashes(node)
            self._wait_for_subscribers(publishers, stop_event)
            stats = PlaybackStats()
            for record in latched:
                publishers[record.topic].publish(record.raw)
                stats.count(record.topic)
            sink, waiter = _RosSink(publishers, clock), MonotonicWaiter(stop_event)
            summary = play_records(lambda: prefetched(self.source.records(), PREFETCH_DEPTH), sink,
                                   self.config, waiter, stats)
            self._wait_for_acks(list(publishers.values()), stop_event)
            return summary
        finally:
            for publisher in [*publishers.values(), *([clock] if clock else [])]:
                node.destroy_publisher(publisher)

    def _check_type_hashes(self, node: Node) -> None:
        """Refuse to send bytes whose recorded layout differs from the installed class."""
        for name, topic in self.source.topics.items():
            ours = [str(info.topic_type_hash) for info in node.get_publishers_info_by_topic(name)
                    if info.node_name == node.get_name() and info.node_namespace == node.get_namespace()]
            if topic.type_hash and ours and topic.type_hash not in ours:
                raise BagError(f"topic {name}: {topic.msgtype} was recorded with type hash "
                               f"{topic.type_hash} but the installed one is {ours[0]}; "
                               "its bytes would be misread")

    def _wait_for_subscribers(self, publishers: dict[str, Publisher], stop_event: threading.Event) -> None:
        """Give discovery up to the configured time to match a subscriber on every timed topic.

        Latched topics are not waited for: late joiners get them anyway. The publisher sees
        the match before the subscriber does, and samples sent in between are only repaired
        while still in the publisher's short history, hence the settle time afterwards.
        """
        if self._wait_for_subscribers_s <= 0:
            return
        timed = [p for name, p in publishers.items() if name not in LATCHED_TOPICS]
        deadline = time.monotonic() + self._wait_for_subscribers_s
        while (time.monotonic() < deadline and not stop_event.is_set()
               and any(p.get_subscription_count() == 0 for p in timed)):
            stop_event.wait(0.05)
        stop_event.wait(min(DISCOVERY_SETTLE_S, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _wait_for_acks(publishers: list[Publisher], stop_event: threading.Event) -> None:
        """Let reliable subscribers take the last messages before the publishers go away.

        Acks may wait for the writer's periodic heartbeat (seconds), so all publishers
        share one deadline and short slices keep a stop request effective.
        """
        deadline = time.monotonic() + ACK_TIMEOUT_S
        pending = publishers
        while pending and time.monotonic() < deadline and not stop_event.is_set():
            pending = [p for p in pending if not p.wait_for_all_acked(Duration(seconds=ACK_SLICE_S))]

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> BagPlayer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
