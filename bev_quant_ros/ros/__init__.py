"""The ROS 2 adapter: node wiring, parameters, message conversion, diagnostics.

Only `node` and `message_encoding` import rclpy and the message packages; the other
modules read messages by their fields (rclpy and rosbags messages alike), so the
offline drive readers share them without a ROS install.
"""
