"""`bev-quant replay` as its own process over real DDS, checked by a subscriber in this process.

The bags are tiny (1 s of String, Image, Detection3DArray and one /tf_static) so the whole
module runs in well under a minute. Timing is checked as ratios and fits, not absolute times.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosgraph_msgs.msg import Clock

from bev_quant_ros.replay.bag_source import BagSource
from bev_quant_ros.replay.ros_player import message_class
from bev_quant_ros.replay.sample_bag import START_NS, write_sample_bag
from bev_quant_ros.ros.bag_types import typestore_with
from integration.ros_helpers import installed_executable, spin_until, start_process, stop_process

TIMED_TOPICS = ("/chatter", "/camera/image_raw", "/detections")
LATCHED_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay_bags")
    for storage in ("mcap", "sqlite3"):
        write_sample_bag(root / storage, storage)
    return {storage: root / storage for storage in ("mcap", "sqlite3")}


def expected_messages(bag: Path) -> dict[str, list[tuple[int, object]]]:
    """(stamp, rclpy message) per topic, decoded from the bag's own bytes."""
    with BagSource(bag) as source:
        classes = {name: message_class(t.msgtype) for name, t in source.topics.items()}
        expected: dict[str, list] = {name: [] for name in source.topics}
        for record in [*source.latched_records(), *source.records()]:
            expected[record.topic].append((record.stamp_ns, deserialize_message(record.raw,
                                                                                  classes[record.topic])))
    return expected


class Collector:
    """Subscribes to the sample bag's topics and /clock; keeps messages with arrival times."""

    def __init__(self, node: Node, topics: dict[str, type]) -> None:
        self.node = node
        self.received: dict[str, list[tuple[float, object]]] = {name: [] for name in topics}
        self.clock: list[int] = []
        for name, cls in topics.items():
            qos = LATCHED_QOS if name == "/tf_static" else QoSProfile(depth=100)
            node.create_subscription(cls, name, self._keep(name), qos)
        node.create_subscription(Clock, "/clock", self._on_clock, QoSProfile(depth=1000))

    def _keep(self, name: str):
        return lambda msg: self.received[name].append((time.monotonic(), msg))

    def _on_clock(self, msg: Clock) -> None:
        self.clock.append(msg.clock.sec * 10**9 + msg.clock.nanosec)

    def messages(self, topic: str) -> list:
        return [msg for _, msg in self.received[topic]]


def replay(node: Node, bag: Path, topics: list[str], *args: str) -> subprocess.Popen:
    """Start the player and wait until ``node`` has discovered its publishers.

    The player starts once it sees a subscriber on every topic, but a subscriber only
    takes data from a publisher it has discovered itself; subscribing after this node
    knows the publishers makes both sides of the match complete before the first message.
    """
    process = start_process([installed_executable("bev-quant"), "replay", "--bag", str(bag),
                             "--wait-for-subscribers-s", "20", *args])
    known = spin_until(node, lambda: all(node.count_publishers(t) for t in [*topics, "/clock"]),
                       timeout_s=20.0)
    if not known:
        _, out, err = stop_process(process)
        pytest.fail(f"player publishers not discovered: {out}\n{err}")
    return process


def play_to_end(node: Node, bag: Path, *args: str, expected_counts: dict[str, int]) -> Collector:
    """Replay the whole bag to a fresh collector; fail with the player's output if it misbehaves.

    Once everything arrived the player may still wait for acks (heartbeat-paced), so it is
    stopped with SIGINT, which must still end it with status 0 and its summary.
    """
    topics = {name: type(msgs[0][1]) for name, msgs in expected_messages(bag).items()}
    process = replay(node, bag, list(topics), *args)
    collector = Collector(node, topics)
    done = spin_until(node, lambda: all(len(collector.received[t]) >= n for t, n in expected_counts.items()),
                      timeout_s=30.0)
    code, out, err = stop_process(process)
    assert done, f"replay incomplete: {({t: len(m) for t, m in collector.received.items()})}\n{out}\n{err}"
    assert code == 0, err
    assert "(> 1 ms:" in out and "1 pass(es)" in out
    return collector


def assert_identical_content(collector: Collector, expected: dict[str, list]) -> None:
    """Every message of every topic arrived, in order, decoding to what the bag holds."""
    for topic, messages in expected.items():
        assert collector.messages(topic) == [msg for _, msg in messages], topic
    # And the content is what the bag writer put in, through the custom type too.
    assert [m.data for m in collector.messages("/chatter")] == [f"message {k}" for k in range(11)]
    detection = collector.messages("/detections")[2].detections[0]
    hypothesis = detection.results[0].hypothesis
    assert (hypothesis.class_id, detection.id, detection.bbox.size.x) == ("car", "track-2", 4.5)
    image = collector.messages("/camera/image_raw")[0]
    assert (image.height, image.width, image.encoding, len(image.data)) == (4, 6, "rgb8", 72)
    transforms = collector.messages("/tf_static")[0].transforms
    assert [t.child_frame_id for t in transforms] == ["CAM_FRONT", "LIDAR_TOP"]


def test_sqlite3_bag_arrives_with_identical_content(ros_context, bags):
    expected = expected_messages(bags["sqlite3"])
    node = rclpy.create_node("replay_listener_sqlite3")
    try:
        collector = play_to_end(node, bags["sqlite3"], "--rate", "4",
                                expected_counts={t: len(m) for t, m in expected.items()})
    finally:
        node.destroy_node()
    assert_identical_content(collector, expected)


def arrival_fit(collector: Collector, expected: dict[str, list]) -> tuple[float, float]:
    """Slope and worst residual (s) of arrival time against recorded stamp, all timed topics."""
    stamps, arrivals = [], []
    for topic in TIMED_TOPICS:
        assert len(collector.received[topic]) == len(expected[topic])
        stamps += [stamp for stamp, _ in expected[topic]]
        arrivals += [t for t, _ in collector.received[topic]]
    stamp_s, arrival_s = (np.asarray(stamps) - START_NS) / 1e9, np.asarray(arrivals)
    slope, intercept = np.polyfit(stamp_s, arrival_s, 1)
    return float(slope), float(np.abs(arrival_s - (slope * stamp_s + intercept)).max())


def test_mcap_bag_identical_content_spaced_like_stamps_and_rate_two_halves_it(ros_context, bags):
    expected = expected_messages(bags["mcap"])
    counts = {t: len(m) for t, m in expected.items()}
    slopes = {}
    last_stamp = max(stamp for t in TIMED_TOPICS for stamp, _ in expected[t])
    for rate in ("1", "2"):
        node = rclpy.create_node(f"replay_timing_{rate}")
        try:
            collector = play_to_end(node, bags["mcap"], "--rate", rate, expected_counts=counts)
            # /clock is its own topic: its last message may be processed after the data.
            spin_until(node, lambda: collector.clock[-1:] == [last_stamp], timeout_s=5.0)
        finally:
            node.destroy_node()
        assert_identical_content(collector, expected)
        slopes[rate], worst_residual_s = arrival_fit(collector, expected)
        assert worst_residual_s < 0.05, f"rate {rate}: arrivals {worst_residual_s}s off the recorded timing"
        clock = np.asarray(collector.clock)
        assert len(clock) > 50  # 100 Hz over ≥ 0.5 s, plus one per message
        assert np.all(np.diff(clock) >= 0), "/clock went backwards without a loop"
        assert clock.min() >= START_NS and clock.max() == last_stamp
    assert slopes["1"] == pytest.approx(1.0, abs=0.1)
    assert slopes["2"] / slopes["1"] == pytest.approx(0.5, abs=0.05)


def test_loop_replays_with_time_going_backwards_and_latches_tf_static(ros_context, bags):
    expected = expected_messages(bags["mcap"])
    node = rclpy.create_node("replay_loop_listener")
    process = replay(node, bags["mcap"], ["/chatter", "/tf_static"],
                     "--loop", "--rate", "4", "--topics", "/chatter", "/tf_static")
    collector = Collector(node, {"/chatter": type(expected["/chatter"][0][1])})
    late_node = rclpy.create_node("replay_late_joiner")
    try:
        backwards = lambda: int(np.count_nonzero(np.diff(collector.clock) < 0))  # noqa: E731
        looped = spin_until(node, lambda: len(collector.messages("/chatter")) > 22 and backwards() >= 2,
                            timeout_s=30.0)
        assert looped, f"no second loop: {len(collector.messages('/chatter'))} chatter, {backwards()} jumps"
        # /tf_static went out before the first pass; a subscriber joining now still gets it.
        late: list = []
        tf_class = type(expected["/tf_static"][0][1])
        late_node.create_subscription(tf_class, "/tf_static", late.append, LATCHED_QOS)
        assert spin_until(late_node, lambda: late, timeout_s=10.0), "late joiner got no /tf_static"
    finally:
        code, out, err = stop_process(process)
        node.destroy_node()
        late_node.destroy_node()
    assert late == [expected["/tf_static"][0][1]]
    chatter = [m.data for m in collector.messages("/chatter")]
    assert chatter[:22] == [f"message {k}" for k in range(11)] * 2
    jumps = np.flatnonzero(np.diff(collector.clock) < 0) + 1
    assert all(collector.clock[j] == expected["/chatter"][0][0] for j in jumps)  # back to the first stamp
    assert code == 0, f"replay did not stop cleanly on SIGINT: {err}"
    assert "interrupted" in out and "/tf_static: 1" in out


def write_bag_with_unavailable_package(path: Path) -> None:
    msgtype = "bev_quant_absent_msgs/msg/Thing"
    typestore = typestore_with({msgtype: "int32 value\n"})
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/thing", msgtype, typestore=typestore)
        message = typestore.types[msgtype](value=3)
        writer.write(connection, START_NS, typestore.serialize_cdr(message, msgtype))


def write_bag_with_foreign_type_hash(path: Path) -> None:
    """A String topic whose recorded type hash is not the installed one (another layout)."""
    typestore = typestore_with({})
    msgdef, _ = typestore.generate_msgdef("std_msgs/msg/String", ros_version=2)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", msgdef=msgdef,
                                           rihs01="RIHS01_" + "ab" * 32)
        message = typestore.types["std_msgs/msg/String"](data="x")
        writer.write(connection, START_NS, typestore.serialize_cdr(message, "std_msgs/msg/String"))


@pytest.mark.parametrize("case, args, message", [
    ("missing", ["--bag", "{tmp}/absent"], "does not exist"),
    ("corrupt", ["--bag", "{tmp}/corrupt"], "cannot read bag"),
    ("rate", ["--bag", "{mcap}", "--rate", "0"], "rate must be > 0"),
    ("topic", ["--bag", "{mcap}", "--topics", "/chatter", "/nope"], "topics not in bag"),
    ("package", ["--bag", "{tmp}/absent_pkg"], "Python package 'bev_quant_absent_msgs' is missing"),
    ("hash", ["--bag", "{tmp}/foreign_hash"], "recorded with type hash RIHS01_abab"),
])
def test_bad_input_exits_non_zero_with_one_line(bags, tmp_path, case, args, message):
    if case == "corrupt":
        (tmp_path / "corrupt").mkdir()
        (tmp_path / "corrupt" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    if case == "package":
        write_bag_with_unavailable_package(tmp_path / "absent_pkg")
    if case == "hash":
        write_bag_with_foreign_type_hash(tmp_path / "foreign_hash")
    argv = [a.format(tmp=tmp_path, mcap=bags["mcap"]) for a in args]
    result = subprocess.run([installed_executable("bev-quant"), "replay", *argv],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bev-quant replay: error:") and message in lines[0], \
        result.stderr
