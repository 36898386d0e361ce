"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import docker.errors
import pytest

PROJECT = Path(__file__).resolve().parent.parent


def require(condition: bool, reason: str) -> None:
    """Skip when the machine lacks what the test needs; in CI (where CI is set) fail instead: nothing may skip."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this cannot be skipped: {reason}")
    pytest.skip(reason)


def docker_engine() -> docker.DockerClient:
    """A Docker engine that answers (DOCKER_HOST or the default socket); skip without one (fail in CI)."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        require(False, f"no Docker engine answers (DOCKER_HOST or the default socket): {error}")
        raise
    return client
