"""Instruments for watching a node while its pods are OOM-killed (test_blast_radius.py): the kernel's log of kills
read as it comes, the kernel's own per-cgroup kill counters and a node's pods cgroup, the node's MemoryPressure
condition polled by a thread, and the reads of pods and events the verdicts rest on."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import select
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

from tests.e2e.harness.host import memory_hierarchy
from workload import logfmt

KERNEL_LOG = Path("/dev/kmsg")
OOM_KILL_LINE = re.compile(
    r"oom-kill:constraint=(?P<constraint>[^,]*),.*?oom_memcg=(?P<oom_memcg>[^,]*),"
    r"task_memcg=(?P<task_memcg>[^,]*),task=(?P<task>[^,]*),pid=(?P<pid>\d+)"
)
SUPPRESSED = re.compile(r"oom_kill_process: (?P<count>\d+) callbacks suppressed")
# A pod's (or its container's) cgroup under a node's cgroup root, cgroupfs driver: kubepods[/<qos>]/pod<uid>[/<id>]
POD_CGROUP = re.compile(
    r"/kubepods/(?:(?P<qos>burstable|besteffort)/)?pod(?P<uid>[0-9a-f-]{36})(?:/(?P<container>[^/]+))?$"
)


# -- the kernel's log --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OomKill:
    seq: int
    constraint: str
    oom_memcg: str  # the cgroup whose limit was hit
    task_memcg: str  # the killed task's cgroup
    task: str
    pid: int


class KernelLog:
    """The kernel's log from the moment this is made, read from /dev/kmsg by a thread, each record once. A reader
    left behind by more than the ring buffer holds is told so (EPIPE): `lost` counts the records it missed."""

    def __init__(self) -> None:
        self.fd = os.open(KERNEL_LOG, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)  # only what comes from now on
        self.kills: list[OomKill] = []
        self.killed: list[str] = []  # each `...: Killed process` line's cause ("Memory cgroup out of memory", ...)
        self.suppressed = 0  # oom-kill summaries the kernel's rate limit left out, where it says so
        self.records = 0
        self.lost = 0
        self._last_seq: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            select.select([self.fd], [], [], 0.2)
            while True:
                try:
                    record = os.read(self.fd, 8192).decode(errors="replace")
                except BlockingIOError:
                    break
                except BrokenPipeError:
                    with self._lock:
                        self.lost += 1
                    continue
                self._take(record)

    def _take(self, record: str) -> None:
        prefix, _, message = record.partition(";")
        fields = prefix.split(",")
        seq = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
        found = OOM_KILL_LINE.search(message.splitlines()[0] if message else "")
        with self._lock:
            self.records += 1
            if seq is not None:
                if self._last_seq is not None and seq > self._last_seq + 1:
                    self.lost += seq - self._last_seq - 1
                self._last_seq = seq
            cause, killed, _ = message.partition(": Killed process ")
            if killed:
                self.killed.append(cause.strip())
            suppressed = SUPPRESSED.search(message)
            if suppressed:
                self.suppressed += int(suppressed["count"])
            if found:
                self.kills.append(
                    OomKill(
                        seq or 0,
                        found["constraint"],
                        found["oom_memcg"],
                        found["task_memcg"],
                        found["task"],
                        int(found["pid"]),
                    )
                )

    def kills_under(self, cgroup_root: str) -> list[OomKill]:
        """The OOM kills whose limit or victim was in a cgroup under this root."""
        prefix = f"/{cgroup_root}/"
        with self._lock:
            return [k for k in self.kills if (k.oom_memcg + "/").startswith(prefix) or k.task_memcg.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.fd)


def pod_uid(memcg: str) -> str | None:
    found = POD_CGROUP.search(memcg)
    return found["uid"] if found else None


def kills_by_pod(kills: list[OomKill]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for kill in kills:
        uid = pod_uid(kill.task_memcg) or kill.task_memcg
        counted[uid] = counted.get(uid, 0) + 1
    return counted


# -- the kernel's counters ---------------------------------------------------------------------------------------------


def oom_kills_in_pod(cgroup_root: str, uid: str) -> int:
    """The kernel's count of OOM kills of the pod's processes: the sum of its container cgroups' `oom_kill` (cgroup
    v1 counts each kill in the victim's own cgroup only, at the kill). A container cgroup goes with a container
    restart, so this holds for pods whose containers never restarted (the supervised hogs; the neighbour)."""
    total = 0
    for control in (memory_hierarchy() / cgroup_root / "kubepods").glob(f"**/pod{uid}/*/memory.oom_control"):
        with contextlib.suppress(FileNotFoundError):
            for text in control.read_text().splitlines():
                if text.startswith("oom_kill "):
                    total += int(text.split()[1])
    return total


def pods_cgroup(cgroup_root: str, name: str) -> int:
    """A file of a node's pods cgroup (v1 memory controller), as a number."""
    return int((memory_hierarchy() / cgroup_root / "kubepods" / name).read_text())


# -- the node and its pods ---------------------------------------------------------------------------------------------


class PressureWatch:
    """A node's MemoryPressure condition, read every second by a thread: every status seen."""

    def __init__(self, core: client.CoreV1Api, node: str) -> None:
        self.core = core
        self.node = node
        self.seen: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                node: Any = self.core.read_node_status(self.node)
                for condition in node.status.conditions or []:
                    if condition.type == "MemoryPressure":
                        self.seen.add(str(condition.status))
                self.polls += 1
            self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def pods_in(core: client.CoreV1Api, namespace: str) -> list[Any]:
    pods: list[Any] = core.list_namespaced_pod(namespace).items
    return pods


def is_running(pod: Any) -> bool:
    statuses = pod.status.container_statuses or []
    return pod.status.phase == "Running" and bool(statuses) and statuses[0].state.running is not None


def unschedulable(pod: Any) -> str | None:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return str(condition.message)
    return None


# Event reasons that would mean harm: an eviction, the kubelet's memory signal crossing its threshold, the node's
# MemoryPressure turning on, a kill of the whole machine's (SystemOOM: the kernel's log names no cgroup but the root),
# a pod preempted to make room.
HARM_REASONS = ("Evicted", "EvictionThresholdMet", "NodeHasInsufficientMemory", "SystemOOM", "Preempted")
NODE_REASONS = ("EvictionThresholdMet", "NodeHasInsufficientMemory", "SystemOOM")


def harm_events(core: client.CoreV1Api, since: float, node: str) -> dict[str, int]:
    """Events of the harm reasons anywhere in the cluster from `since` on; the node's own only of `node` (the first
    node's kubelet reads the same machine's log)."""
    counted = dict.fromkeys(HARM_REASONS, 0)
    events: list[Any] = core.list_event_for_all_namespaces().items
    for event in events:
        stamp = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
        if event.reason not in counted or (stamp is not None and stamp.timestamp() < since - 1):
            continue
        if event.reason in NODE_REASONS and event.involved_object.name != node:
            continue
        counted[event.reason] += 1
    return counted


def sigkill_lines(core: client.CoreV1Api, name: str, namespace: str) -> int:
    """The `event=child_exit signal=SIGKILL` lines in a supervised hog's log: its worker's kills, as it saw them."""
    log = str(core.read_namespaced_pod_log(name, namespace))
    lines = [logfmt.parse(text) for text in log.splitlines()]
    return sum(1 for entry in lines if entry.get("event") == "child_exit" and entry.get("signal") == "SIGKILL")


def epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def memory_requested(core: client.CoreV1Api, node: str, leave_out: str) -> int:
    """Bytes of memory requested by the pods bound to the node that still hold it, but those of one namespace."""
    pods: list[Any] = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    return sum(
        int(parse_quantity((container.resources.requests or {}).get("memory", "0")))
        for pod in pods
        if pod.status.phase not in ("Succeeded", "Failed") and pod.metadata.namespace != leave_out
        for container in pod.spec.containers
    )


def namespaces(core: client.CoreV1Api) -> set[str]:
    listed: list[Any] = core.list_namespace().items
    return {str(namespace.metadata.name) for namespace in listed}
