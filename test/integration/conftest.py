"""Fixtures shared by the integration tests."""

from collections.abc import Iterator

import pytest
import rclpy  # after test/conftest.py has chosen this run's ROS_DOMAIN_ID


@pytest.fixture()
def ros_context() -> Iterator[None]:
    """An rclpy context for the test's in-process nodes, shut down after it."""
    rclpy.init()
    yield
    rclpy.try_shutdown()
