"""The processes the test cluster runs, and the state file from which `stop` takes them down from another process
(`python -m tests.e2e.cluster stop DIR`), also after a crash.

Every change is written to the file as it is made: a pid when its process starts, a port before a server listens
on it, a kernel setting's value before it is changed, a folder before it is made on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("OOM_KILLER_E2E_CACHE", "/var/cache/oom-killer-ci"))
BIN = Path(os.environ.get("OOM_KILLER_E2E_BIN", str(CACHE / "bin")))
BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "builds" / "build.sh"
BINARIES = (
    "etcd",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "pause",
)


class ClusterError(Exception):
    """The cluster could not be built or started; the message says which part and shows its log's tail."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not (BIN / name).exists()]


def build() -> None:
    """Build (or find cached) the cluster's binaries; CI runs the same script first, to show the build's time."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(BIN)], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"building the cluster's binaries failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


class State:
    """The state file (`state.json` in the cluster's folder): the pids of what runs, the kernel settings to put
    back, each node's spec and the ports its kubelet listens on, and the rest `stop` and a restart need (the
    bridge, the API server's port and address, etcd's address, the folders made on the machine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The watched climb (tests/e2e/watching.py) starts processes from a thread of its own: one writer at a time.
        self.lock = threading.RLock()
        saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.pids: dict[str, int] = saved.pop("pids", {})
        self.tunables: dict[str, str] = saved.pop("tunables", {})
        self.nodes: dict[str, dict[str, Any]] = saved.pop("nodes", {})  # a file from before nodes has none
        self.values: dict[str, Any] = saved  # the rest, by name

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            self.values[key] = value
            self.save()

    def pop(self, key: str) -> Any:
        with self.lock:
            value = self.values.pop(key, None)
            self.save()
        return value

    def save(self) -> None:
        with self.lock:
            document = {"pids": self.pids, "tunables": self.tunables, "nodes": self.nodes, **self.values}
            self.path.write_text(json.dumps(document, indent=2))


class Processes:
    """Start, wait for and end the cluster's processes, each logged to logs/NAME.log and its pid in the state."""

    def __init__(self, state: State, logs: Path) -> None:
        self.state = state
        self.logs = logs

    def _log(self, name: str) -> Path:
        return self.logs / f"{name.replace('/', '-')}.log"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self._log(name).open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # not in the test's process group: a Ctrl-C reaches only the tests
            )
        with self.state.lock:
            self.state.pids[name] = process.pid
            self.state.save()
        return process

    def end(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s (at once with no grace)."""
        with self.state.lock:
            pid = self.state.pids.pop(name, None)
        terminate(pid, grace)
        self.state.save()

    def pid(self, name: str) -> int:
        return self.state.pids[name]

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self._log(name)
        if not path.exists():
            return f"({name} wrote no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait(self, name: str, ready: Callable[[], object], timeout: float = 60.0) -> None:
        """Poll `ready()` until true; fail with the process's log if it died or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.state.pids.get(name)
            if pid is not None and not alive(pid):
                raise ClusterError(f"{name} exited while starting:\n{self.log_tail(name)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.5)
        raise ClusterError(f"{name} was not ready after {timeout:.0f} s:\n{self.log_tail(name)}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0): look at its state.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def terminate(pid: int | None, grace: float = 10.0) -> None:
    if pid is None or not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def kill(pids: Iterator[int] | list[int]) -> None:
    """SIGKILL each, those already gone passed over."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes_with(*needles: str) -> Iterator[int]:
    """The machine's processes whose command line holds every needle."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if all(needle in command for needle in needles):
                yield int(entry.name)
