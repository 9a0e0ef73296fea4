"""The package as colcon installs it without --symlink-install: a non-editable copy in a prefix.

The editable install the other tests use reads config/, models/ and the modules straight
from the checkout, so a file missing from setup.py's data_files or packages, or a script
installed where `ros2 run` / PATH do not look, would only show on a vehicle. Here
`setup.py install --prefix P` (colcon's command) runs on a copy of the repository's files;
the tools and the node then run with P first on PYTHONPATH and AMENT_PREFIX_PATH, the
venv still providing rclpy and the message packages.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from bev_quant_ros.cli import SUBCOMMAND_MODULES
from bev_quant_ros.resources import default_model_path
from integration.ros_helpers import spin_until, stop_process

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "bev_quant_ros"
NODE = "bev_perception_node"


def _subcommands() -> list[str]:
    """Every `bev-quant` subcommand, as each module of SUBCOMMAND_MODULES registers them."""
    names: list[str] = []
    for module_name in SUBCOMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module_name).register(subparsers)
        names.extend(subparsers.choices)
    return names


def _repository_files() -> list[str]:
    """Tracked and not-ignored files (what a clean clone would hold), without deleted ones."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip(f"{ROOT} is not a git checkout (or git is missing): cannot list its files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _build_outputs() -> set[str]:
    return {p.name for p in ROOT.glob("*.egg-info")} | {p.name for p in (ROOT / "build").glob("*")}


class Installed:
    """A prefix holding the installed package and the environment that runs from it."""

    def __init__(self, prefix: Path, workdir: Path) -> None:
        self.prefix = prefix
        self.workdir = workdir  # cwd of every command: not the checkout, so '' on sys.path is not it
        site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
        self.site_packages = Path(site)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
        self.env["AMENT_PREFIX_PATH"] = os.pathsep.join(
            filter(None, [str(prefix), os.environ.get("AMENT_PREFIX_PATH", sys.prefix)]))
        self.env["PATH"] = os.pathsep.join([str(prefix / "bin"), os.environ["PATH"]])

    def run(self, args: list[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """`setup.py install --prefix` from a copy of the checkout, as colcon runs it.

    Not `pip install --prefix`: pip uninstalls the venv's editable install of the same
    distribution first, and a wheel puts every script in bin/ (no lib/bev_quant_ros).
    """
    base = tmp_path_factory.mktemp("installed")
    source, prefix = base / "src", base / "prefix"
    before = _build_outputs()
    started = time.monotonic()
    for name in _repository_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    result = subprocess.run(
        [sys.executable, "setup.py", "egg_info", "build", "install", "--prefix", str(prefix),
         "--single-version-externally-managed", "--record", str(base / "installed_files.txt")],
        cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"\nnon-editable install into {prefix}: {time.monotonic() - started:.1f} s")
    assert _build_outputs() == before, "the install left build outputs in the checkout"
    return Installed(prefix, base)


def test_scripts_land_where_ros2_run_and_path_look(installed):
    assert (installed.prefix / "lib" / PACKAGE / NODE).is_file()
    assert (installed.prefix / "bin" / "bev-quant").is_file()
    assert not (installed.prefix / "bin" / NODE).exists()
    assert not (installed.prefix / "lib" / PACKAGE / "bev-quant").exists()
    share = installed.prefix / "share" / PACKAGE
    for name in ("package.xml", "launch/bev_perception.launch.py", "config/bev_perception.param.yaml",
                 "config/rig_nuscenes.yaml", "models/bev_tiny.onnx", "models/bev_tiny.int8_cpu.onnx",
                 "schema/bev_perception.schema.json"):
        assert (share / name).is_file(), name
    assert (installed.prefix / "share/ament_index/resource_index/packages" / PACKAGE).is_file()


def test_modules_import_from_the_prefix(installed):
    code = ("import importlib, bev_quant_ros.cli as cli\n"
            "for name in ('bev_quant_ros', *cli.SUBCOMMAND_MODULES):\n"
            "    print(importlib.import_module(name).__file__)")
    result = installed.run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert len(files) == 1 + len(SUBCOMMAND_MODULES)
    assert all(Path(f).is_relative_to(installed.site_packages) for f in files), files


def test_bev_quant_help(installed):
    result = installed.run(["bev-quant", "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bev-quant")
    assert all(name in result.stdout for name in _subcommands())
    assert "calibrate" in _subcommands()


@pytest.mark.parametrize("subcommand", _subcommands())
def test_each_subcommand_help(installed, subcommand):
    result = installed.run(["bev-quant", subcommand, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: bev-quant {subcommand}")


def test_node_with_missing_model_exits_2_naming_the_parameter(installed):
    result = installed.run([str(installed.prefix / "lib" / PACKAGE / NODE), "--ros-args",
                            "-p", "model_path:=/nonexistent.onnx"], timeout_s=60.0)
    assert result.returncode == 2, result.stderr
    assert "parameter 'model_path'" in result.stderr


def test_node_with_shipped_model_publishes_diagnostics_and_stops_on_sigint(installed):
    # The listener exists before the node starts, so the node's first discovery announcements
    # find it (a listener created after them was, once in a few full runs, never sent data).
    rclpy.init()
    listener = rclpy.create_node("installed_diagnostics_listener")
    received: list[str] = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: received.extend(
        s.name for s in msg.status if s.name.startswith(NODE)), 10)
    process = subprocess.Popen([str(installed.prefix / "lib" / PACKAGE / NODE), "--ros-args",
                                "-p", "diagnostics_period_s:=0.5"], cwd=installed.workdir,
                               env=installed.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = spin_until(listener, lambda: received, timeout_s=60.0)
        publishers = listener.count_publishers("/diagnostics")
    finally:
        code, out, err = stop_process(process)
        listener.destroy_node()
        rclpy.try_shutdown()
    assert got, (f"no diagnostics from the installed node (exit {code}; /diagnostics publishers discovered: "
                 f"{publishers}): {err[-2000:]}")
    assert f"{NODE}: pipeline" in received
    # The shipped default model is the prefix's copy, not the checkout's.
    assert str(installed.prefix / "share" / PACKAGE / "models" / default_model_path("int8").name) in out + err
    assert code == 0, f"node did not shut down cleanly on SIGINT: {err[-2000:]}"
