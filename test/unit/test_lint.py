"""Lint gate: `ruff check` (rules in ruff.toml) passes on the package, the tests, benchmarks and launch files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("bev_quant_ros", "test", "benchmarks", "launch")


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (pinned in requirements/venv.txt, tests block)")
def test_ruff_check_passes():
    # --no-cache: other checkouts and concurrent runs share the tree; no .ruff_cache left behind
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *TARGETS]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"ruff check failed:\n{result.stdout}{result.stderr}"
