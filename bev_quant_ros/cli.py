"""`bev-quant`: the tool command; each subcommand lives in its own module.

A subcommand module exposes ``register(subparsers)`` which adds its parser and
sets ``func`` (called with the parsed args, returns the exit code). Modules are
imported only when listed here, so the CLI stays fast and a missing optional
dependency (torch) only breaks the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "bev_quant_ros.sim.cli",
    "bev_quant_ros.evaluation.demo",
    "bev_quant_ros.replay.cli",
    "bev_quant_ros.model.cli",
    "bev_quant_ros.engine.cli",
    "bev_quant_ros.evaluation.cli",
    "bev_quant_ros.drives.nuscenes_cli",
    "bev_quant_ros.quant.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="bev-quant", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bev-quant` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
