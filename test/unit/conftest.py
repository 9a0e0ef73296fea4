"""Fixtures shared by the unit tests."""

from pathlib import Path

import pytest

from .engine_fixtures import write_tiny_models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(fp32, int8) tiny contract models for the engine tests, written once per test session."""
    return write_tiny_models(tmp_path_factory.mktemp("tiny_engine"))
