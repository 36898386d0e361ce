"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from oomtools.rehearsal import DeclaredPod, build_image, stack_pod

PROJECT = Path(__file__).resolve().parent.parent
# The small memory limit the container tests give the dev stack's pod (dev_pod), so each kill comes in seconds.
CONTAINER_LIMIT_MIB = 64


def require(condition: bool, reason: str) -> None:
    """Skip when the machine lacks what the test needs; in CI (where CI is set) fail instead: nothing may skip."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this cannot be skipped: {reason}")
    pytest.skip(reason)


def tool_on_path(name: str, package: str) -> str:
    """The path of a command the test runs (promtool, amtool); skip without it (fail in CI), naming its package."""
    found = shutil.which(name)
    require(found is not None, f"no {name} on PATH (Debian: apt-get install {package})")
    assert found is not None
    return found


def docker_engine() -> docker.DockerClient:
    """A Docker engine that answers (DOCKER_HOST or the default socket); skip without one (fail in CI)."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        require(False, f"no Docker engine answers (DOCKER_HOST or the default socket): {error}")
        raise
    return client


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """The Docker engine, one client for the whole session (it holds no state a test could leave behind)."""
    client = docker_engine()
    yield client
    client.close()


@pytest.fixture(scope="session")
def dev_pod(engine: docker.DockerClient) -> DeclaredPod:
    """The dev stack's pod with CONTAINER_LIMIT_MIB, its image built from the project's Dockerfile once a session
    (the tag is the build context's content, so every module gets the same image); tests must not change it."""
    pod = stack_pod("dev", {"memoryLimitMb": str(CONTAINER_LIMIT_MIB)})
    build_image(engine, pod)
    return pod
