"""`bev-quant replay`: play a rosbag2 with recorded timing, /clock and latched /tf_static.

Bad input (missing or corrupt bag, rate <= 0, unknown topic, message package not
installed) exits with status 2 and one line on stderr before anything is published.
SIGINT/SIGTERM stop playback cleanly; the summary is printed either way.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from bev_quant_ros.errors import BagError, ConfigError

EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help="play a rosbag2 (sqlite3 or mcap) with recorded timing",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--bag", required=True, type=Path, help="rosbag2 directory")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (> 0)")
    parser.add_argument("--loop", action="store_true", help="restart from the beginning at the end")
    parser.add_argument("--start-offset-s", type=float, default=0.0,
                        help="skip this much bag time from the start (latched topics still sent)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="replay only these topics")
    parser.add_argument("--clock", action=argparse.BooleanOptionalAction, default=True,
                        help="publish /clock with the bag time (for use_sim_time)")
    parser.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate while waiting")
    parser.add_argument("--qos-reliability", choices=("reliable", "best_effort"), default="reliable",
                        help="reliability of the replayed topics (/tf_static is always reliable)")
    parser.add_argument("--wait-for-subscribers-s", type=float, default=0.0,
                        help="before playing, wait up to this long for a subscriber on every topic")
    parser.add_argument("--summary-json", type=Path, help="also write the summary to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # ROS-side tool: imported here so the rest of the CLI works without ROS.
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from bev_quant_ros.replay.ros_player import BagPlayer

    try:
        player = BagPlayer(args.bag, args.rate, args.loop, args.topics, start_offset_s=args.start_offset_s,
                           clock_hz=args.clock_hz if args.clock else 0.0, reliability=args.qos_reliability,
                           wait_for_subscribers_s=args.wait_for_subscribers_s)
    except (BagError, ConfigError) as error:
        print(f"bev-quant replay: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stop_event = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_event.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bev_quant_replay")
    try:
        summary = player.play(node, stop_event)
    except BagError as error:
        print(f"bev-quant replay: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        player.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(summary.format(), flush=True)
    if args.summary_json:
        args.summary_json.write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return 0
