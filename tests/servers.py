"""What the tests that start a server of their own share: a free port on loopback, and the command lines of Debian's
Prometheus and Alertmanager on it, each with its config and its data in folders the test gives."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prometheus_argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}"]


def alertmanager_argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    """One Alertmanager, no cluster: an empty --cluster.listen-address turns its gossip off."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
