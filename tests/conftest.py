"""Shared fixtures. Fixtures that start real servers live in their own modules
(tests/mosquitto.py, ...) and are registered here."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh PUSHAGENT_HOME for one test."""
    d = tmp_path / "home"
    d.mkdir()
    return d
