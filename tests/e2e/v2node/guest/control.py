"""Runs in the guest of a node that joins the e2e cluster (guest/init, when the initrd has /v2/join): starts the
kubelet with the configuration the harness wrote, and serves the harness on a port QEMU forwards from the host's
loopback (tests/e2e/v2node/node.py):

- `POST /kubelet` with a JSON object of kubelet settings (singleProcessOOMKill, say): the kubelet is stopped, its
  configuration changed, and started again, as an operator changes a node's kubelet and restarts it; the pods run on;
- `POST /swap` with `{"mib": N}`: swap on, a zram device of N MiB (the VM tests' own, tests/vm_driver.py), before a
  kubelet restart with `memorySwap` (the kubelet reads the node's swap when it starts);
- `GET /cgroups`: each container cgroup under kubepods with its memory files, as the guest's kernel has them;
- `GET /file?path=...`: a file under /sys/fs/cgroup, /proc/pressure or /var/log (the agents' logs).

Python 3.11 standard library only: it runs on the guest's Debian python3, as `python3 -S control.py`.
"""

from __future__ import annotations

import http.server
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

JOIN = Path("/v2/join")
CONFIG = Path("/var/lib/kubelet/config.json")  # JSON is YAML: the kubelet reads it as its configuration file
KUBELET_LOG = Path("/var/log/kubelet.log")
CGROUP = Path("/sys/fs/cgroup")
KUBELET_CGROUP = CGROUP / "kubelet.service"
READABLE = ("/sys/fs/cgroup/", "/proc/pressure/", "/var/log/")
CHANGEABLE = frozenset({"singleProcessOOMKill", "memorySwap", "failSwapOn"})
MEMORY_FILES = (
    "memory.max",
    "memory.oom.group",
    "memory.events",
    "memory.peak",
    "memory.pressure",
    "memory.swap.max",
    "memory.swap.current",
    "memory.swap.peak",
)
lock = threading.Lock()


def node() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((JOIN / "node.json").read_text())
    return loaded


class Kubelet:
    """The kubelet process, started from the configuration file and restarted with a changed one."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.config: dict[str, Any] = dict(spec["config"])

    def start(self) -> None:
        CONFIG.parent.mkdir(parents=True, exist_ok=True)
        CONFIG.write_text(json.dumps(self.config, indent=1))
        # In a cgroup of its own, as systemd runs it (kubelet.service): on cgroup v2 the kubelet sets a container's
        # memory.swap.max only where its own cgroup has that file, which the root has not. Run from the root, it set
        # none: with swap on, a Guaranteed hog swapped all of it and was never killed (a run of make e2e).
        KUBELET_CGROUP.mkdir(exist_ok=True)
        command = [
            "sh",
            "-c",
            f'echo $$ >{KUBELET_CGROUP / "cgroup.procs"} && exec "$0" "$@"',
            "kubelet",
            f"--config={CONFIG}",
            f"--kubeconfig={JOIN / 'kubeconfig'}",
            f"--hostname-override={self.spec['name']}",
            f"--node-ip={self.spec['ip']}",
            "--v=1",
        ]
        with KUBELET_LOG.open("ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        print(f"MARK kubelet_started {uptime():.2f} pid={self.process.pid}", flush=True)

    def restart(self, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(changes) - CHANGEABLE)
        if unknown:
            raise ValueError(f"not a setting this node changes: {', '.join(unknown)}")
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.config.update(changes)
        self.start()
        return {"restarted": True, "config": {key: self.config.get(key) for key in sorted(CHANGEABLE)}}


def swap_on(mib: int) -> dict[str, Any]:
    """A zram swap device of `mib` MiB, on; what /proc/meminfo then says of the node's memory and swap (what the
    kubelet's LimitedSwap divides: a Burstable container's swap is its request over MemTotal, times SwapTotal)."""
    if "/dev/zram0" not in Path("/proc/swaps").read_text():
        # tests/vm_driver.py, shipped beside this file: loads the base's zram modules (the guest has no kmod)
        importlib.import_module("vm_driver").swap_on(mib)
    meminfo = {}
    for row in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = row.partition(":")
        if key in ("MemTotal", "SwapTotal"):
            meminfo[key] = int(value.split()[0]) * 1024
    return {"swap": True, "mem_total_bytes": meminfo["MemTotal"], "swap_total_bytes": meminfo["SwapTotal"]}


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def container_cgroups() -> list[dict[str, Any]]:
    """Every container's cgroup under kubepods (a 64-hex-digit folder, the container's id) with its memory files."""
    found = []
    for parent, folders, _ in os.walk(CGROUP / "kubepods"):
        for name in folders:
            if len(name) == 64:
                path = Path(parent) / name
                found.append({"path": str(path), **{file: read(path / file) for file in MEMORY_FILES}})
    return found


class Handler(http.server.BaseHTTPRequestHandler):
    kubelet: Kubelet

    def answer(self, status: int, body: object) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/cgroups":
            self.answer(200, container_cgroups())
        elif url.path == "/file":
            wanted = os.path.realpath(urllib.parse.parse_qs(url.query).get("path", [""])[0])
            text = read(Path(wanted)) if wanted.startswith(READABLE) else None
            self.answer(200, text) if text is not None else self.answer(404, f"no such file to read: {wanted}")
        else:
            self.answer(404, f"no {url.path}")

    def do_POST(self) -> None:
        if self.path not in ("/kubelet", "/swap"):
            self.answer(404, f"no {self.path}")
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with lock:
                self.answer(200, self.kubelet.restart(body) if self.path == "/kubelet" else swap_on(int(body["mib"])))
        except (ValueError, KeyError, OSError, subprocess.CalledProcessError) as error:
            self.answer(400, str(error))

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the harness logs what it asked."""


def main() -> None:
    spec = node()
    Handler.kubelet = Kubelet(spec)
    Handler.kubelet.start()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", int(spec["control_port"])), Handler)  # noqa: S104
    print(f"MARK control_listening {uptime():.2f}", flush=True)
    try:
        server.serve_forever()
    finally:
        print(f"MARK control_ended {uptime():.2f}", flush=True)
        time.sleep(0.1)
        sys.exit(1)


if __name__ == "__main__":
    main()
