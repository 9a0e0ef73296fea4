"""Rosbag2 replay: `bev-quant replay` and the `BagPlayer` API (ros_player) behind it.

`player` and `bag_source` hold the timing and bag reading and import no ROS; only
`ros_player` and the subcommand's run() touch rclpy.
"""

from bev_quant_ros import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "BagPlayer": "ros_player",
    "BagSource": "bag_source",
    "PlaybackConfig": "player",
    "play_records": "player",
})
