"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def require(condition: bool, reason: str) -> None:
    """Skip when the machine lacks what the test needs; in CI (where CI is set) fail instead: nothing may skip."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this cannot be skipped: {reason}")
    pytest.skip(reason)
