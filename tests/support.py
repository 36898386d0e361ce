"""What the tests share that is not a fixture: the project's folder, the skip-or-fail rule, the tools on PATH and
the Docker engine they need, and the dev pod's limit. Fixtures and hooks are in conftest.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker
import docker.errors
import pytest

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


def kubeconfig_nobody_answers(folder: Path, context: str = "nowhere") -> tuple[Path, str]:
    """A well-formed kubeconfig whose one context points at a loopback port nothing listens on (it was bound and
    closed here): the client connects and is refused. Returns the file and the server's address."""
    import socket

    import yaml

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        server = f"https://127.0.0.1:{probe.getsockname()[1]}"
    kubeconfig = folder / "kubeconfig-nobody-answers"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": context, "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": context, "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
                "current-context": context,
            }
        )
    )
    return kubeconfig, server
