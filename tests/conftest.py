"""Shared test fixtures: the real-capture directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"


def shared_pcaps_dir() -> Path:
    """``$FLOWSCOPE_SHARED_PCAPS``, else ``../shared/pcaps`` next to the repository."""
    env = os.environ.get("FLOWSCOPE_SHARED_PCAPS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "pcaps"


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    """The shared real-capture set; tests using it skip when it is absent."""
    d = shared_pcaps_dir()
    if not (d / "MANIFEST.md").is_file():
        pytest.skip(f"shared captures not found at {d} (set FLOWSCOPE_SHARED_PCAPS)")
    return d


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The small captures committed in tests/data."""
    return DATA_DIR
