"""Reading bags for replay (bag_source.py) on real sqlite3 and mcap bags written by rosbags."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_types_from_msg

from bev_quant_ros.errors import BagError
from bev_quant_ros.replay.bag_source import BagSource, prefetched
from bev_quant_ros.replay.player import Record
from bev_quant_ros.replay.sample_bag import START_NS, SampleBagLayout, write_sample_bag
from bev_quant_ros.ros.bag_types import VISION_MSGS, typestore_with

LAYOUT = SampleBagLayout()
TIMED_COUNT = sum(LAYOUT.count(hz) for hz in (LAYOUT.chatter_hz, LAYOUT.image_hz, LAYOUT.detections_hz))


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(request.param) / "bag"
    write_sample_bag(path, request.param, LAYOUT)
    return path


def test_reads_every_topic_with_types_counts_and_hashes(bag):
    with BagSource(bag) as source:
        assert {n: (t.msgtype, t.count) for n, t in source.topics.items()} == {
            "/camera/image_raw": ("sensor_msgs/msg/Image", 6),
            "/chatter": ("std_msgs/msg/String", 11),
            "/detections": ("vision_msgs/msg/Detection3DArray", 6),
            "/tf_static": ("tf2_msgs/msg/TFMessage", 1),
        }
        assert all(t.type_hash.startswith("RIHS01_") for t in source.topics.values())
        records = list(source.records())
        latched = source.latched_records()
    assert len(records) == TIMED_COUNT and [r.topic for r in latched] == ["/tf_static"]
    stamps = [r.stamp_ns for r in records]
    assert stamps == sorted(stamps) and stamps[0] == START_NS + 1_000_000
    assert all(isinstance(r.raw, bytes) for r in records)


def test_custom_type_definition_travels_in_the_bag(bag):
    # The bag alone (no vision_msgs anywhere) is enough to decode the custom type.
    with Reader(bag) as reader:
        connection = next(c for c in reader.connections if c.topic == "/detections")
        typestore = typestore_with({})
        typestore.register(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        raw = next(raw for _, _, raw in reader.messages([connection]))
    message = typestore.deserialize_cdr(raw, "vision_msgs/msg/Detection3DArray")
    assert message.detections[0].results[0].hypothesis.class_id == "car"
    assert message.detections[0].bbox.size.x == 4.5
    assert set(VISION_MSGS) <= set(typestore.types)


def test_topic_selection_and_start_offset(bag):
    with BagSource(bag, topics=["/chatter", "/tf_static"], start_offset_s=0.5) as source:
        assert set(source.topics) == {"/chatter", "/tf_static"}
        records = list(source.records())
        latched = source.latched_records()
    assert {r.topic for r in records} == {"/chatter"}
    # chatter at START + 1 ms + k·100 ms; from +500 ms on: k = 5 … 10
    assert [r.stamp_ns - START_NS for r in records] == [1_000_000 + k * 100_000_000 for k in range(5, 11)]
    assert len(latched) == 1  # latched topics ignore the offset


def test_unknown_topic_names_it_and_lists_the_bag(bag):
    with pytest.raises(BagError, match=r"/nope.*bag has: /camera/image_raw, /chatter"):
        BagSource(bag, topics=["/chatter", "/nope"])


def test_missing_bag_directory(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagSource(tmp_path / "absent")


def test_directory_without_metadata(tmp_path):
    with pytest.raises(BagError, match="not a rosbag2 directory: it has no metadata.yaml"):
        BagSource(tmp_path)


@pytest.mark.parametrize("damage", ["metadata", "storage"])
def test_corrupt_bag_is_a_bag_error(bag, tmp_path, damage):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in bag.iterdir():
        data = item.read_bytes()
        if damage == "metadata" and item.name == "metadata.yaml":
            data = b"rosbag2_bagfile_information: [unclosed"
        elif damage == "storage" and item.name != "metadata.yaml":
            data = data[: len(data) // 3]
        (broken / item.name).write_bytes(data)
    with pytest.raises(BagError, match="cannot read bag"):
        with BagSource(broken) as source:
            list(source.records())


def test_negative_start_offset(bag):
    with pytest.raises(BagError, match="start offset"):
        BagSource(bag, start_offset_s=-1.0)


def test_prefetch_keeps_order_and_content(bag):
    with BagSource(bag) as source:
        direct = list(source.records())
        assert list(prefetched(source.records(), depth=2)) == direct


def test_prefetch_reraises_reader_errors_in_the_consumer():
    def failing():
        yield Record("/a", 1, b"x")
        raise BagError("cannot read bag 'x': truncated")

    stream = prefetched(failing(), depth=4)
    assert next(stream).raw == b"x"
    with pytest.raises(BagError, match="truncated"):
        next(stream)


def test_closing_prefetch_early_stops_its_thread():
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield Record("/a", len(produced), b"")

    stream = prefetched(endless(), depth=3)
    assert next(stream).stamp_ns == 1
    stream.close()  # what a stopped playback does; must not hang on the full queue
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 1 + 3 + 1  # consumed + queued + the one being put
    assert not any(t.name == "bag-prefetch" for t in threading.enumerate())
