"""`bev-quant demo`: start the node process and show that it is alive.

Listens on /diagnostics for the node's status and prints it. This is the
README's main command until the live replay demo lands.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

NODE_EXECUTABLE = "bev_perception_node"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="start bev_perception_node and print its status")
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="how long to wait for the node's first diagnostics")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import rclpy  # ROS-side tool: imported here so the rest of the CLI works without ROS
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    executable = Path(sys.executable).parent / NODE_EXECUTABLE
    process = subprocess.Popen([str(executable)], env=dict(os.environ))
    rclpy.init()
    listener = rclpy.create_node("bev_quant_demo")
    statuses: list = []
    listener.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda msg: statuses.extend(s for s in msg.status if s.name.startswith(NODE_EXECUTABLE)), 10)
    deadline = time.monotonic() + args.timeout_s
    try:
        while not statuses and time.monotonic() < deadline and process.poll() is None:
            rclpy.spin_once(listener, timeout_sec=0.1)
    finally:
        listener.destroy_node()
        rclpy.try_shutdown()
        if process.poll() is None:
            process.send_signal(subprocess.signal.SIGINT)
        code = process.wait(timeout=15)
    if not statuses:
        print(f"demo: no diagnostics from {NODE_EXECUTABLE} within {args.timeout_s:.0f} s "
              f"(node exit code {code})", file=sys.stderr)
        return 1
    status = statuses[0]
    values = ", ".join(f"{kv.key}={kv.value}" for kv in status.values)
    level = {DiagnosticStatus.OK: "OK", DiagnosticStatus.WARN: "WARN",
             DiagnosticStatus.ERROR: "ERROR"}.get(status.level, "STALE")
    print(f"demo: {status.name} alive: {level} '{status.message}' [{values}]; "
          f"node exit code on SIGINT: {code}")
    return 0 if code == 0 else 1
