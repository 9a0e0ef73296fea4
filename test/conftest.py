"""Test-wide ROS 2 isolation: each pytest run gets its own DDS domain on loopback.

Set before any rclpy import so in-process nodes and the node processes the
tests start (which inherit os.environ) see each other and nothing else.
"""

import os

os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
