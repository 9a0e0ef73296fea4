"""Rosbag2 replay: `bev-quant replay` and the `BagPlayer` API (ros_player) behind it.

`player` and `bag_source` hold the timing and bag reading and import no ROS; only
`ros_player` and the subcommand's run() touch rclpy.
"""
