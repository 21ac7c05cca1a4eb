"""Shared fixtures: the real data folder (../shared/data, or $TEXT4SEG_DATA), the ROS domain of
this test process in the environment, and tiny random models built once per session.

Plain helpers (no fixtures) are in tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DOMAIN_ID

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


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch) -> int:
    """This process's ROS domain (and DDS discovery on this host only) in the environment, for
    code under test that reads ``ROS_DOMAIN_ID`` (CLIs, the node subprocess it starts)."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return DOMAIN_ID


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make(backbone="llava", **kwargs) -> Path``: a tiny random model saved to disk
    (:func:`text4seg_ros.model.tiny.build_tiny_model`), built once per session for each
    ``(backbone, kwargs)``. Tests must not modify the directory."""
    cache: dict[tuple, Path] = {}

    def make(backbone: str = "llava", **kwargs: object) -> Path:
        key = (backbone, tuple(sorted(kwargs.items())))
        if key not in cache:
            from text4seg_ros.model.tiny import build_tiny_model

            out = tmp_path_factory.mktemp(f"tiny_{backbone}") / backbone
            cache[key] = build_tiny_model(backbone, out, **kwargs)
        return cache[key]

    return make
