"""`BagPlayer` driven in-process from a thread, the way node tests and the demo use it."""

from __future__ import annotations

import threading

import pytest
import rclpy
from rclpy.qos import QoSProfile
from std_msgs.msg import String

from bev_quant_ros.errors import BagError, ConfigError
from bev_quant_ros.replay.ros_player import BagPlayer
from bev_quant_ros.replay.sample_bag import write_sample_bag
from integration.ros_helpers import spin_until


def test_looping_player_in_a_thread_stops_on_its_event(ros_context, tmp_path):
    write_sample_bag(tmp_path / "bag", "mcap")
    listener = rclpy.create_node("replay_api_listener")
    player_node = rclpy.create_node("replay_api_player")
    received: list[str] = []
    listener.create_subscription(String, "/chatter", lambda m: received.append(m.data), QoSProfile(depth=100))
    stop = threading.Event()
    results = []
    with BagPlayer(tmp_path / "bag", rate=4.0, loop=True, topics=["/chatter"],
                   wait_for_subscribers_s=10.0) as player:
        thread = threading.Thread(target=lambda: results.append(player.play(player_node, stop)))
        thread.start()
        try:
            assert spin_until(listener, lambda: len(received) >= 15, timeout_s=20.0)
        finally:
            stop.set()
            thread.join(timeout=10.0)
    assert not thread.is_alive()
    summary = results[0]
    assert summary.interrupted and summary.passes >= 1
    assert received[:15] == [f"message {k}" for k in range(11)] + [f"message {k}" for k in range(4)]
    assert summary.counts["/chatter"] >= len(received)
    listener.destroy_node()
    player_node.destroy_node()


def test_constructor_rejects_bad_input_before_any_ros_call(tmp_path):
    write_sample_bag(tmp_path / "bag", "sqlite3")
    with pytest.raises(ConfigError, match="rate"):
        BagPlayer(tmp_path / "bag", rate=-1.0)
    with pytest.raises(ConfigError, match="reliability"):
        BagPlayer(tmp_path / "bag", reliability="sometimes")
    with pytest.raises(BagError, match="/missing"):
        BagPlayer(tmp_path / "bag", topics=["/missing"])
