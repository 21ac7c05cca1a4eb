"""Shared fixtures: the real data folder (../shared/data, or $TEXT4SEG_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """../shared/data beside the repository, or $TEXT4SEG_DATA."""
    return Path(os.environ.get("TEXT4SEG_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; skips the test with a clear message when it is absent."""
    path = shared_data_dir()
    if not (path / "coco_tiny16").is_dir() or not (path / "davis_blackswan").is_dir():
        pytest.skip(f"real data not found at {path} (set TEXT4SEG_DATA to ../shared/data)")
    return path
