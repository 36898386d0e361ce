"""Runs in the guest once the kubelet is started (guest/init): stamps each stage of the static hog pod with the guest's
uptime, as three places see it: the kernel's cgroups, the pod's log file and the kubelet's read-only `/pods`. Then it
prints one RESULT line with what it read.

Each stage is a `MARK <name> <uptime> [key=value ...]` line on stdout, which init points at the results serial port;
the host stamps each line with its own clock as it arrives (tests/e2e/v2node/vm.py). Python 3.11 standard library
only: it runs on the guest's Debian python3, as `python3 -S watch.py TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")
POD_LOGS = Path("/var/log/pods")
LIMIT = str(128 * 2**20)  # the hog's limit in guest/hog-pod.yaml: how its cgroups are told from the pause's
PODS_URL = "http://127.0.0.1:10255/pods"  # the kubelet's read-only port (guest/kubelet.yaml)
HEALTHZ_URL = "http://127.0.0.1:10248/healthz"
marks: dict[str, float] = {}


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def mark(name: str, **extra: object) -> None:
    """The first time a stage is seen, and only then: later polls see the same state again."""
    if name in marks:
        return
    marks[name] = uptime()
    tail = " ".join(f"{key}={value}" for key, value in extra.items())
    print(f"MARK {name} {marks[name]:.2f} {tail}".rstrip(), flush=True)


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def keyed(text: str | None) -> dict[str, str]:
    pairs = (line.split() for line in (text or "").splitlines())
    return {fields[0]: fields[1] for fields in pairs if len(fields) == 2}


def hog_cgroups() -> list[Path]:
    """The container cgroups (64 hex digits, the container's id) under kubepods with the hog's memory.max."""
    found = []
    for parent, folders, _ in os.walk(CGROUP / "kubepods"):  # folders only: polled every 0.1 s under TCG
        for name in folders:
            path = Path(parent) / name
            if len(name) == 64 and read(path / "memory.max") == LIMIT:
                found.append(path)
    return found


def pod_log_lines() -> list[tuple[str, str]]:
    """(file name, line) of every log file the kubelet keeps for the hog container, restarts included."""
    lines: list[tuple[str, str]] = []
    for log in sorted(POD_LOGS.glob("*/hog/*")):
        with log.open(errors="replace") as handle:
            lines.extend((log.name, line.rstrip("\n")) for line in handle)
    return lines


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - the fixed http URLs above
            return str(response.read().decode())
    except (OSError, http.client.HTTPException):  # the kubelet is not listening yet, or not fully
        return None


def read_pods(facts: dict[str, Any]) -> None:
    """Marks from the hog container's status in the kubelet's `/pods` (standalone: the kubelet's own view)."""
    text = get(PODS_URL)
    if not text:
        return
    for pod in json.loads(text).get("items") or []:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            if status.get("name") != "hog":
                continue
            state, last = status.get("state") or {}, status.get("lastState") or {}
            if "running" in state:
                mark("kubelet_reports_running")
            terminated = last.get("terminated") or state.get("terminated")
            if terminated:
                facts["kubelet_terminated"] = terminated
                facts["restartCount"] = status.get("restartCount")
                mark("kubelet_reports_terminated", reason=terminated.get("reason"), exitCode=terminated.get("exitCode"))


def main(timeout: float) -> None:
    facts: dict[str, Any] = {}
    seen: dict[Path, dict[str, Any]] = {}
    started = time.monotonic()
    last_http = 0.0
    while time.monotonic() - started < timeout:
        if "kubelet_healthz" not in marks and get(HEALTHZ_URL) == "ok":
            mark("kubelet_healthz")
        for path in hog_cgroups():
            if path not in seen:
                seen[path] = {"path": str(path), "first": uptime(), "memory.max": read(path / "memory.max")}
                mark("hog_cgroup_created")
            events = keyed(read(path / "memory.events"))
            if not events:  # removed since the walk: what was read last stays
                continue
            # Read at each poll: memory.oom.group is set after the cgroup appears (the first read may see 0).
            group = read(path / "memory.oom.group")
            seen[path].update(
                {"memory.oom.group": group, "memory.events": events, "memory.peak": read(path / "memory.peak")}
            )
            if int(events.get("oom_kill", 0)) > 0:
                kills = {key: events.get(key) for key in ("oom_kill", "oom_group_kill", "max", "oom")}
                mark("oom_kill_in_container_cgroup", oom_group=group, **kills)
        if any("event=start" in line for _, line in pod_log_lines()):
            mark("hog_start_line_logged")
        if time.monotonic() - last_http > 1.0:  # the kubelet answers slowly under TCG: once a second is enough
            last_http = time.monotonic()
            read_pods(facts)
        if "kubelet_reports_terminated" in marks and "oom_kill_in_container_cgroup" in marks:
            break
        time.sleep(0.1)
    facts["hog_cgroups"] = list(seen.values())
    # The pod's own cgroup, and kubepods: cgroup v2 counts in every ancestor's memory.events too.
    ancestors = {str(path.parent): keyed(read(path.parent / "memory.events")) for path in seen}
    ancestors["kubepods"] = keyed(read(CGROUP / "kubepods" / "memory.events"))
    facts["ancestors"] = ancestors
    facts["pod_log"] = [f"{name}: {line}" for name, line in pod_log_lines()]
    facts["marks"] = marks
    print("RESULT " + json.dumps(facts), flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]))
