"""Helpers for integration tests that talk to node processes over real DDS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

T = TypeVar("T")


def installed_executable(name: str) -> str:
    """Path of a console script installed next to this interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run scripts/setup_env.sh")
    return found


def start_process(args: list[str]) -> subprocess.Popen:
    """Start a node process with its output captured for failure messages."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def spin_until(node: Node, condition: Callable[[], T], timeout_s: float) -> T:
    """Spin ``node`` until ``condition()`` is truthy; return its last value.

    A private executor per call: rclpy's global executor outlives rclpy.shutdown()
    and misbehaves when a later test module calls rclpy.init() again.
    """
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout_s
        value = condition()
        while not value and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            value = condition()
        return value
    finally:
        executor.remove_node(node)
        executor.shutdown()


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> tuple[int, str, str]:
    """SIGINT the process like Ctrl-C / ros2 launch does; return (code, stdout, stderr)."""
    if process.poll() is None:
        process.send_signal(subprocess.signal.SIGINT)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err
