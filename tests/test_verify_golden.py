"""What `verify` and `demo` say, byte for byte, for a fixed set of runs: the lines, the tables, the JUnit report and the
exit code, kept in tests/golden/verdicts.txt.

Each verify scenario is a whole `verify.run` against a fake cluster (the Kubernetes client's calls answered from a
script of pod listings over a fake clock), and, where asked, fake Prometheus and Alertmanager answers; each demo
scenario is a whole `demo.main` with the engine's run replaced by a recorded log. Nothing below names a module of
verify's own but its package: the scenarios hold whatever shape its insides take. A change to what a user reads
shows here as a diff; to accept one on purpose: `GOLDEN_UPDATE=1 venv/bin/python -m pytest tests/test_verify_golden.py`
and commit the file with the reason.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oomtools import alert_client as prom
from oomtools import demo, rehearsal, verify
from oomtools.verify import observe

GOLDEN = Path(__file__).parent / "golden" / "verdicts.txt"
T0 = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
NS = "oom-killer"
NAME = "oom-killer"
OUTPUTS = {
    "namespace": NS,
    "workloadKind": "Deployment",
    "workloadName": NAME,
    "predictedSecondsToOomKill": {"earliest": 6, "latest": 8},
    "predictedOomKillStep": {"earliest": 7, "latest": 8},
}


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def step_line(step: int) -> str:
    return f"event=step step={step} allocated_mib={16 * step} rss_mib={16 * step + 9} limit_pct={12 * step}.5"


# ---------------------------------------------------------------------------------------------------------------
# A fake cluster: the calls verify makes, answered from a script over the fake clock


def running(started: float) -> Any:
    return SimpleNamespace(running=SimpleNamespace(started_at=at(started)), terminated=None)


def waiting() -> Any:
    return SimpleNamespace(running=None, terminated=None)


def terminated(
    container_id: str, started: float, finished: float, reason: str = "OOMKilled", message: str = "", code: int = 137
) -> Any:
    end = SimpleNamespace(
        container_id=container_id,
        reason=reason,
        exit_code=code,
        message=message,
        started_at=at(started),
        finished_at=at(finished),
    )
    return SimpleNamespace(running=None, terminated=end)


def status(state: Any, last: Any = None, restarts: int = 0, container_id: str = "", name: str = "oom-killer") -> Any:
    return SimpleNamespace(
        name=name, restart_count=restarts, state=state, last_state=last, container_id=container_id or None
    )


def pod(name: str, *statuses: Any, node: str | None = None, pending: str | None = None, meant: str = "") -> Any:
    conditions = [SimpleNamespace(type="PodScheduled", status="False", message=pending, reason="Unschedulable")]
    term = SimpleNamespace(match_fields=[SimpleNamespace(key="metadata.name", values=[meant])])
    affinity = SimpleNamespace(
        node_affinity=SimpleNamespace(
            required_during_scheduling_ignored_during_execution=SimpleNamespace(node_selector_terms=[term])
        )
    )
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name),
        spec=SimpleNamespace(node_name=node, affinity=affinity if meant else None),
        status=SimpleNamespace(conditions=conditions if pending else [], container_statuses=list(statuses)),
    )


def workload(env: dict[str, str], replicas: int = 1, node_selector: dict[str, str] | None = None) -> Any:
    pod_spec = {"nodeSelector": node_selector or {}, "tolerations": [{"key": "dedicated", "operator": "Exists"}]}
    container = SimpleNamespace(env=[SimpleNamespace(name=k, value=v) for k, v in env.items()])
    spec = SimpleNamespace(containers=[container], node_selector=node_selector, as_json=pod_spec)
    return SimpleNamespace(
        spec=SimpleNamespace(
            replicas=replicas,
            selector=SimpleNamespace(match_labels={"app.kubernetes.io/name": NAME}),
            template=SimpleNamespace(spec=spec),
        )
    )


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pool": "oom", **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {
            "nodeInfo": {
                "kernelVersion": "6.1.0-40-amd64",
                "kubeletVersion": "v1.37.2",
                "containerRuntimeVersion": "containerd://2.4.2",
            },
            "allocatable": {"memory": "2000Mi"},
        },
    }


@dataclass
class Cluster:
    """What the API answers: the workload over time (None: gone), the pod listings over time, the pods' logs (each
    line with the second it is written), the namespace's events and the nodes."""

    clock: Callable[[], float]
    workloads: list[tuple[float, Any]]
    pods: list[tuple[float, list[Any]]]
    logs: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def _now(self) -> float:
        return self.clock() - T0.timestamp()

    def _latest(self, script: list[tuple[float, Any]]) -> Any:
        current = None
        for since, value in script:
            if since <= self._now():
                current = value
        return current

    # CoreV1Api
    def list_namespaced_pod(self, namespace: str, label_selector: str, _request_timeout: float) -> Any:
        assert (namespace, label_selector) == (NS, f"app.kubernetes.io/name={NAME}")
        return SimpleNamespace(items=self._latest(self.pods) or [])

    def read_namespaced_pod_log(self, name: str, namespace: str, _request_timeout: float, **how: Any) -> str:
        assert namespace == NS
        lines = [(t, text) for t, text in self.logs.get(name, []) if t <= self._now()]
        if how.get("timestamps"):
            return "".join(f"{at(t).isoformat().replace('+00:00', 'Z')} {text}\n" for t, text in lines)
        return "".join(f"{text}\n" for _, text in lines)

    def list_namespaced_event(self, namespace: str, _request_timeout: float) -> Any:
        assert namespace == NS
        return SimpleNamespace(items=self.events)

    def list_node(self, _request_timeout: float) -> Any:
        return SimpleNamespace(items=self.nodes)

    # AppsV1Api
    def read_namespaced_deployment(self, name: str, namespace: str, _request_timeout: float) -> Any:
        return self._read(name, namespace)

    def read_namespaced_daemon_set(self, name: str, namespace: str, _request_timeout: float) -> Any:
        return self._read(name, namespace)

    def _read(self, name: str, namespace: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        assert (name, namespace) == (NAME, NS)

        found = self._latest(self.workloads)
        if found is None:
            raise ApiException(status=404, reason="Not Found")
        return found

    @property
    def api_client(self) -> Any:
        return SimpleNamespace(sanitize_for_serialization=lambda obj: getattr(obj, "as_json", obj))


@dataclass
class Alerting:
    """Prometheus' and Alertmanager's answers: the alerts firing over time, the series, what Alertmanager holds."""

    clock: Callable[[], float]
    rules: tuple[str, ...] = prom.DEFAULT_ALERTS
    firing: dict[str, tuple[float, float]] = field(default_factory=dict)  # alert -> (fired, resolved) seconds
    series: dict[str, list[tuple[dict[str, str], list[tuple[float, float]]]]] = field(default_factory=dict)
    held: list[tuple[float, prom.Routed]] = field(default_factory=list)

    def _now(self) -> float:
        return self.clock() - T0.timestamp()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(prom, "check_reachable", lambda *_: "2.53.0")
        monkeypatch.setattr(prom, "rule_names", lambda *_: set(self.rules))
        monkeypatch.setattr(prom, "firing", self._firing)
        monkeypatch.setattr(prom, "samples", self._samples)
        monkeypatch.setattr(prom, "alertmanager_version", lambda *_: "0.28.1")
        monkeypatch.setattr(prom, "alertmanager_alerts", self._held)

    def _firing(self, _url: str, names: tuple[str, ...], namespace: str, _access: Any) -> dict[str, list[Any]]:
        assert namespace == NS
        return {
            name: [{}] if name in self.firing and self.firing[name][0] <= self._now() < self.firing[name][1] else []
            for name in names
        }

    def _samples(
        self, _url: str, selector: str, since: float, until: float, _access: Any
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        name, _, rest = selector.partition("{")
        matchers = dict(re.findall(r'([A-Za-z_]+)="([^"]*)"', rest))
        found = []
        for labels, points in self.series.get(name, []):
            if all(labels.get(key, "") == value for key, value in matchers.items()):
                window = [(t, v) for t, v in points if since <= t <= until]
                if window:
                    found.append((labels, window))
        return found

    def _held(self, _url: str, namespace: str, _access: Any = None) -> list[prom.Routed]:
        assert namespace == NS
        return [alert for since, alert in self.held if since <= self._now()]


class FakeTime:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        assert self.now - T0.timestamp() < 4000, "the watch never ends"


# ---------------------------------------------------------------------------------------------------------------
# The verify scenarios


@dataclass
class Run:
    argv: list[str]
    cluster: Callable[[FakeTime], Cluster]
    alerting: Callable[[FakeTime], Alerting] | None = None
    outputs: dict[str, Any] = field(default_factory=lambda: dict(OUTPUTS))


def kill_loop(
    finals: list[tuple[float, float, str, str, int]], restart_gap: float = 2.0
) -> list[tuple[float, list[Any]]]:
    """The pod listings of one container killed again and again: each (started, finished, reason, message, code),
    the next container started `restart_gap` after the death."""
    script: list[tuple[float, list[Any]]] = []
    last = None
    for number, (started, finished, reason, message, code) in enumerate(finals):
        cid = f"containerd://c{number + 1}"
        script.append((started, [pod("oom-killer-7d9f-x2m", status(running(started), last, number, cid))]))
        last = terminated(cid, started, finished, reason, message, code)
        script.append((finished, [pod("oom-killer-7d9f-x2m", status(waiting(), last, number + 1))]))
    started = finals[-1][1] + restart_gap
    cid = f"containerd://c{len(finals) + 1}"
    script.append((started, [pod("oom-killer-7d9f-x2m", status(running(started), last, len(finals), cid))]))
    return script


def started_at(*seconds: float, **more: object) -> dict[str, list[tuple[float, str]]]:
    """The kill loop's pod's log: its hog's start line (a cgroup v1 node's) at each run's start."""
    line = hog_start() + "".join(f" {key}={value}" for key, value in more.items())
    return {"oom-killer-7d9f-x2m": [(second + 0.2, line) for second in seconds]}


def single_kills(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock,
        [(0, workload({"MEMORY_INCREMENT_MB": "16"}))],
        kill_loop([(0, 7, "OOMKilled", step_line(6), 137), (9, 16.5, "OOMKilled", step_line(7), 137)]),
        logs=started_at(0, 9),
    )


def single_kills_with_swap(fake: FakeTime) -> Cluster:
    """A cgroup v2 node whose kubelet gives the Burstable pod 64 MiB of swap (LimitedSwap): the hog swaps before it
    dies, in steps 11 and 12 (the stack's 7..8 moved by 3 to 5 steps of 16 MiB: 10..13, 9..13 s)."""
    swapped = {"cgroup": "v2:/kubepods.slice/cri-containerd-c.scope", "swap_max_mib": 64}
    return Cluster(
        fake.clock,
        [(0, workload({"MEMORY_INCREMENT_MB": "16"}))],
        kill_loop([(0, 10, "OOMKilled", step_line(10), 137), (12, 23, "OOMKilled", step_line(11), 137)]),
        logs=started_at(0, 12, **swapped),
    )


def late_and_other_death(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock,
        [(0, workload({}))],
        kill_loop([(0, 30, "OOMKilled", step_line(3), 137), (32, 40, "Error", "Traceback: MemoryError", 1)], 5),
        logs=started_at(0, 32),
    )


def tmpfs_restart_at_start(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock,
        [(0, workload({"MEMORY_KIND": "tmpfs", "MEMORY_DIR": "/data"}))],
        kill_loop([(0, 7, "OOMKilled", step_line(6), 137), (9, 9.5, "OOMKilled", "", 137)]),
        logs=started_at(0),
    )


def tmpfs_all_at_start(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock,
        [(0, workload({"MEMORY_KIND": "tmpfs", "MEMORY_DIR": "/data"}))],
        kill_loop([(0, 0.5, "OOMKilled", "", 137), (3, 3.5, "OOMKilled", "", 137)]),
    )


def tmpfs_from_a_restart(fake: FakeTime) -> Cluster:
    """The watch starts with the pod in its fourth run: the first run's kill, the one that steps, came before."""
    name = "oom-killer-7d9f-x2m"
    before = terminated("containerd://c3", -13, -12.5)
    fourth = terminated("containerd://c4", 0, 0.5)
    fifth = terminated("containerd://c5", 3, 3.5)
    return Cluster(
        fake.clock,
        [(0, workload({"MEMORY_KIND": "tmpfs", "MEMORY_DIR": "/data"}))],
        [
            (0, [pod(name, status(running(0), before, 3, "containerd://c4"))]),
            (0.5, [pod(name, status(waiting(), fourth, 4))]),
            (3, [pod(name, status(running(3), fourth, 4, "containerd://c5"))]),
            (3.5, [pod(name, status(waiting(), fifth, 5))]),
            (5, [pod(name, status(running(5), fifth, 5, "containerd://c6"))]),
        ],
    )


def held_by_ceiling(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock, [(0, workload({"MEMORY_CEILING_MB": "64"}))], [(0, [pod("p", status(running(0), None, 0, "c1"))])]
    )


def scaled_to_zero(fake: FakeTime) -> Cluster:
    return Cluster(fake.clock, [(0, workload({}, replicas=0))], [])


SUPERVISED_POD = "queue-5c4b-k8s"


def supervised_logs() -> dict[str, list[tuple[float, str]]]:
    exit_line = "event=child_exit pid={pid} signal=SIGKILL oom_kill={n} container_survived=true"
    return {
        SUPERVISED_POD: [
            (0, "event=supervisor_start process_model=supervised oom_group=0"),
            (0.5, "event=start limit_mib=128 predicted_steps=8"),
            (7.5, exit_line.format(pid=12, n=1)),
            (9, "event=start limit_mib=128 predicted_steps=8"),
            (16, exit_line.format(pid=13, n=2)),
        ]
    }


def supervised(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock,
        [(0, workload({"PROCESS_MODEL": "supervised"}))],
        [(0, [pod(SUPERVISED_POD, status(running(0), None, 0, "containerd://w1"))])],
        logs=supervised_logs(),
    )


def supervisor_logs(
    first: str, *runs: tuple[float, float], start: str = "event=start limit_mib=128 predicted_steps=8"
) -> list[tuple[float, str]]:
    """A supervised container's log over its runs (started, ended): the supervisor's line (`first`), its worker's
    start line, and the worker's steps, one a second; the next run is the next container's."""
    lines: list[tuple[float, str]] = []
    for started, ended in runs:
        lines += [(started, first), (started + 0.3, start)]
        lines += [(started + 0.3 + n, step_line(n)) for n in range(1, int(ended - started))]
    return lines


GROUP_KILL_LINE = "event=supervisor_start process_model=supervised oom_group=1"


def supervised_group_killed(fake: FakeTime) -> Cluster:
    """cgroup v2, memory.oom.group=1: each kill takes the worker and PID 1, the container OOMKilled and restarted,
    its termination message the worker's last step."""
    return Cluster(
        fake.clock,
        [(0, workload({"PROCESS_MODEL": "supervised", "MEMORY_INCREMENT_MB": "16"}))],
        kill_loop([(0, 7, "OOMKilled", step_line(6), 137), (9, 16.5, "OOMKilled", step_line(7), 137)]),
        logs={"oom-killer-7d9f-x2m": supervisor_logs(GROUP_KILL_LINE, (0, 7), (9, 16.5))},
    )


def supervised_group_killed_with_swap(fake: FakeTime) -> Cluster:
    """memory.oom.group=1 on a node that gives the pod 64 MiB of swap: the supervisor's line says the group, its
    worker's the swap (the stack's steps 7..8 moved to 10..13), and the kills come in steps 10 and 11."""
    worker = "event=start limit_mib=128 cgroup=v2:/kubepods.slice/cri-containerd-c.scope oom_group=1 swap_max_mib=64"
    return Cluster(
        fake.clock,
        [(0, workload({"PROCESS_MODEL": "supervised", "MEMORY_INCREMENT_MB": "16"}))],
        kill_loop([(0, 10, "OOMKilled", step_line(9), 137), (12, 23, "OOMKilled", step_line(10), 137)]),
        logs={"oom-killer-7d9f-x2m": supervisor_logs(GROUP_KILL_LINE, (0, 10), (12, 23), start=worker)},
    )


def group_kill_monitoring(fake: FakeTime) -> Alerting:
    t = T0.timestamp()
    labels = {"namespace": NS, "pod": "oom-killer-7d9f-x2m", "container": "oom-killer"}
    alerting = Alerting(fake.clock, firing={"ContainerOOMKilled": (10, 9999), "ContainerCrashLooping": (18, 9999)})
    ksm = "kube_pod_container_status_last_terminated_timestamp"
    alerting.series[ksm] = [(labels, [(t + 10, t + 7), (t + 20, t + 16.5)])]
    alerting.series["ALERTS"] = [
        ({**labels, "alertname": name, "alertstate": "firing"}, [(t + fired, 1.0), (t + 30, 1.0)])
        for name, fired in (("ContainerOOMKilled", 10), ("ContainerCrashLooping", 18))
    ]
    return alerting


def supervised_group_expected_alone(fake: FakeTime) -> Cluster:
    """memory.oom.group=1, yet the worker dies alone and the container runs on: not what the kernel does."""
    cluster = supervised(fake)
    cluster.logs = {SUPERVISED_POD: [(0, GROUP_KILL_LINE), *supervised_logs()[SUPERVISED_POD][1:]]}
    return cluster


def supervised_fleet(fake: FakeTime) -> Cluster:
    """A supervised DaemonSet on a cgroup v1 node (the worker killed alone) and a v2 node with memory.oom.group=1
    (the container killed whole, then restarted)."""
    killed = terminated("containerd://b1", 0, 7, message=step_line(6))
    v1_start = "event=start limit_mib=128 cgroup=v1:/kubepods/burstable/pod1/a1"
    v2_start = f"{HOG_START} limit_mib=128"
    exit_line = "event=child_exit pid=12 signal=SIGKILL oom_kill=1 container_survived=true"
    return Cluster(
        fake.clock,
        [(0, workload({"PROCESS_MODEL": "supervised"}, node_selector={"pool": "oom"}))],
        [
            (
                0,
                [
                    pod("hog-v1", status(running(0), None, 0, "containerd://a1"), node="v1"),
                    pod("hog-v2", status(running(0), None, 0, "containerd://b1"), node="v2"),
                ],
            ),
            (
                7,
                [
                    pod("hog-v1", status(running(0), None, 0, "containerd://a1"), node="v1"),
                    pod("hog-v2", status(waiting(), killed, 1), node="v2"),
                ],
            ),
            (
                9,
                [
                    pod("hog-v1", status(running(0), None, 0, "containerd://a1"), node="v1"),
                    pod("hog-v2", status(running(9), killed, 1, "containerd://b2"), node="v2"),
                ],
            ),
        ],
        logs={
            "hog-v1": [(0, "event=supervisor_start process_model=supervised"), (0.3, v1_start), (7.5, exit_line)],
            "hog-v2": [(0, GROUP_KILL_LINE), (0.3, v2_start), (1.3, step_line(1)), (9, GROUP_KILL_LINE)],
        },
        nodes=[node("v1"), node("v2")],
    )


FLEET_OUTPUTS = {**OUTPUTS, "workloadKind": "DaemonSet"}
HOG_START = "event=start cgroup=v2:/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope oom_group=1"


def fleet(fake: FakeTime) -> Cluster:
    killed = terminated("containerd://a1", 0, 7, message=step_line(6))
    late = terminated("containerd://l1", 0, 30, message=step_line(6))
    return Cluster(
        fake.clock,
        [(0, workload({}, node_selector={"pool": "oom"}))],
        [
            (0, [pod("hog-a", status(running(0), None, 0, "containerd://a1"), node="a")]),
            (
                7,
                [
                    pod("hog-a", status(waiting(), killed, 1), node="a"),
                    pod("hog-late", status(running(0), None, 0, "containerd://l1"), node="late"),
                    pod("hog-full", pending="0/4 nodes are available: 1 Insufficient memory.", meant="full"),
                ],
            ),
            (
                30,
                [
                    pod("hog-a", status(running(9), killed, 1, "containerd://a2"), node="a"),
                    pod("hog-late", status(waiting(), late, 1), node="late"),
                    pod("hog-full", pending="0/4 nodes are available: 1 Insufficient memory.", meant="full"),
                ],
            ),
        ],
        logs={"hog-a": [(0, HOG_START), (1, step_line(1))], "hog-late": [(0, "event=start cgroup=v1:/kubepods/pod2")]},
        nodes=[
            node("a"),
            node("late"),
            node("full"),
            node("gpu", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
            node("web", labels={"pool": "web"}),
        ],
    )


def fleet_selecting_nothing(fake: FakeTime) -> Cluster:
    return Cluster(
        fake.clock,
        [(0, workload({}, node_selector={"pool": "oom"}))],
        [],
        nodes=[node("web", labels={"pool": "web"}), node("db", labels={"pool": "db"})],
    )


def kills_with_monitoring(fake: FakeTime) -> Cluster:
    cluster = single_kills(fake)
    cluster.workloads.append((20, workload({}, replicas=0)))  # scaled to 0 after the kills: the alerts resolve
    cluster.pods.append((21, []))
    cluster.events = [
        SimpleNamespace(
            involved_object=SimpleNamespace(kind="Pod", name="oom-killer-7d9f-x2m", namespace=NS),
            reason="OOMKilling",
            message="Memory cgroup out of memory: Killed process 7 (python3)",
            last_timestamp=at(17),
            event_time=None,
        )
    ]
    return cluster


def monitoring(fake: FakeTime) -> Alerting:
    t = T0.timestamp()
    labels = {"namespace": NS, "pod": "oom-killer-7d9f-x2m", "container": "oom-killer"}
    ksm = "kube_pod_container_status_last_terminated_timestamp"
    alerting = Alerting(
        fake.clock,
        rules=("ContainerOOMKilled", "ContainerOOMKillWithoutRestart"),  # no ContainerCrashLooping rule loaded
        firing={"ContainerOOMKilled": (10, 40), "ContainerCrashLooping": (18, 44)},
        held=[
            (12, prom.Routed({"alertname": "ContainerOOMKilled", **labels}, "active", ("memory-kills",))),
            (19, prom.Routed({"alertname": "ContainerCrashLooping", **labels}, "suppressed", ("memory-kills",))),
        ],
    )
    # kube-state-metrics scraped the first kill only (the second came between scrapes); cAdvisor counted both.
    alerting.series[ksm] = [(labels, [(t + 10, t + 7), (t + 25, t + 7)])]
    cadvisor = {**labels, "id": "/kubepods/burstable/podu1/c2", "name": "c2"}
    alerting.series["container_oom_events_total"] = [(cadvisor, [(t + 17, 1.0)])]
    alerting.series["ALERTS"] = [
        ({**labels, "alertname": "ContainerOOMKilled", "alertstate": "firing"}, [(t + 10, 1.0), (t + 30, 1.0)])
    ]
    return alerting


def supervised_monitoring(fake: FakeTime) -> Alerting:
    t = T0.timestamp()
    labels = {"namespace": NS, "pod": SUPERVISED_POD, "container": "oom-killer"}
    cadvisor = {**labels, "id": "/kubepods/burstable/podu2/w1", "name": "w1"}
    alerting = Alerting(fake.clock, firing={"ContainerOOMKillWithoutRestart": (12, 9999)})
    alerting.series["container_oom_events_total"] = [(cadvisor, [(t + 5, 0.0), (t + 10, 1.0), (t + 20, 1.0)])]
    alerting.series["ALERTS"] = [
        ({**labels, "alertname": "ContainerOOMKillWithoutRestart", "alertstate": "firing"}, [(t + 12, 1.0)])
    ]
    return alerting


PROMETHEUS = ["--prometheus", "http://prometheus:9090", "--detector-grace", "30s"]

SCENARIOS: dict[str, Run] = {
    "single kills, as predicted": Run(["--kills", "2"], single_kills),
    "single kills, one late, one other death, junit": Run(["--kills", "2", "--timeout", "60s"], late_and_other_death),
    "single kill, --kills 1": Run(["--kills", "1"], single_kills),
    "single kills on a node that gives the pod swap": Run(["--kills", "2"], single_kills_with_swap),
    "tmpfs, the restart killed at start": Run(["--kills", "2"], tmpfs_restart_at_start),
    "tmpfs, every kill at start": Run(["--kills", "2"], tmpfs_all_at_start),
    "tmpfs, watched from a restart on: every kill at start": Run(["--kills", "2"], tmpfs_from_a_restart),
    "held by a ceiling": Run(
        ["--timeout", "20s"], held_by_ceiling, outputs={**OUTPUTS, "predictedSecondsToOomKill": None}
    ),
    "replicas 0": Run(["--timeout", "5s"], scaled_to_zero),
    "supervised worker kills": Run(["--kills", "2"], supervised),
    "supervised, the group killed (cgroup v2, oom_group=1), with alerts": Run(
        [*PROMETHEUS, "--kills", "2", "--timeout", "60s"], supervised_group_killed, group_kill_monitoring
    ),
    "supervised, the group killed on a node that gives the pod swap": Run(
        ["--kills", "2"], supervised_group_killed_with_swap
    ),
    "supervised, oom_group=1 but the worker died alone": Run(
        ["--kills", "1", "--timeout", "20s"], supervised_group_expected_alone
    ),
    "fleet of nodes": Run(["--kills", "1", "--timeout", "45s"], fleet, outputs=FLEET_OUTPUTS),
    "supervised fleet, a v1 node and a v2 node": Run(
        ["--kills", "1", "--timeout", "45s"], supervised_fleet, outputs=FLEET_OUTPUTS
    ),
    "fleet selecting no node": Run(
        ["--kills", "1", "--timeout", "30s"], fleet_selecting_nothing, outputs=FLEET_OUTPUTS
    ),
    "alerts and detectors, stack scaled to 0": Run(
        [*PROMETHEUS, "--alertmanager", "http://alertmanager:9093", "--kills", "2", "--timeout", "90s"],
        kills_with_monitoring,
        monitoring,
    ),
    "supervised with alerts": Run([*PROMETHEUS, "--kills", "2", "--timeout", "60s"], supervised, supervised_monitoring),
    "asked-for alert that never fires": Run(
        [*PROMETHEUS, "--alert", "ContainerCrashLooping", "--timeout", "30s"],
        single_kills,
        lambda fake: Alerting(fake.clock),
    ),
}


def run_verify(scenario: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    import kubernetes.client
    import kubernetes.config

    fake = FakeTime()
    cluster = scenario.cluster(fake)
    monkeypatch.setattr(time, "sleep", fake.sleep)
    monkeypatch.setattr(observe, "chosen_context", lambda _kubeconfig, _context: "fake")  # no kubeconfig to read
    monkeypatch.setattr(kubernetes.config, "new_client_from_config", lambda **_: cluster.api_client)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda _client: cluster)
    monkeypatch.setattr(kubernetes.client, "AppsV1Api", lambda _client: cluster)
    if scenario.alerting is not None:
        scenario.alerting(fake).install(monkeypatch)
    junit = tmp_path / "verify.xml"
    argv = [*scenario.argv, "--outputs", json.dumps(scenario.outputs), "--junit", str(junit)]
    out, err = io.StringIO(), io.StringIO()
    code = verify.run(verify.parse_args(argv), out, err, clock=fake.clock)
    xml = junit.read_text() if junit.exists() else "(none)\n"
    return f"exit {code}\n--- stdout\n{out.getvalue()}--- stderr\n{err.getvalue()}--- junit\n{xml}\n"


# ---------------------------------------------------------------------------------------------------------------
# The demo scenarios: the engine's run replaced by a recorded log


def hog_start(earliest: int = 7, latest: int = 8, **more: object) -> str:
    extra = "".join(f" {key}={value}" for key, value in more.items())
    return (
        f"event=start limit_mib=128 increment_mib=16 interval_ms=1000 predicted_steps_earliest={earliest} "
        f"predicted_steps={latest} predicted_steps_latest={latest} predicted_seconds={latest - 1}.0{extra}"
    )


def holding(allocated: int) -> str:
    return (
        f"event=holding allocated_mib={allocated} cgroup_usage_mib=127 limit_pct=99.2 working_set_mib=21 file_mib=119"
    )


@dataclass
class DemoRun:
    overrides: list[str]
    lines: list[str]
    killed: bool
    exit_code: int
    termination_message: str = ""


DEMO_SCENARIOS: dict[str, DemoRun] = {
    "demo, killed in an announced step": DemoRun(
        [], [hog_start(), *(step_line(n) for n in range(1, 7))], True, 137, step_line(6)
    ),
    "demo, killed early": DemoRun([], [hog_start(), *(step_line(n) for n in range(1, 4))], True, 137, step_line(3)),
    "demo, killed before its start line": DemoRun([], [], True, 137),
    "demo, held by a ceiling": DemoRun(
        ["--set", "memoryCeilingMb=64"],
        ["event=start limit_mib=128 predicted_seconds=none", *(step_line(n) for n in range(1, 5)), holding(64)],
        False,
        0,
    ),
    "demo, page cache held": DemoRun(
        ["--set", "memoryKind=pagecache"],
        ["event=start limit_mib=128 predicted_seconds=none", *(step_line(n) for n in range(1, 17)), holding(256)],
        False,
        0,
    ),
    "demo, supervised worker killed": DemoRun(
        ["--set", "processModel=supervised"],
        [
            "event=supervisor_start process_model=supervised oom_group=0",
            hog_start(),
            *(step_line(n) for n in range(1, 8)),
            "event=child_exit pid=9 signal=SIGKILL oom_kill=1 container_survived=true",
            hog_start(),
            "event=stop children=1 stopped_worker=9",
        ],
        False,
        0,
    ),
    "demo, supervised, the group killed": DemoRun(
        ["--set", "processModel=supervised"],
        ["event=supervisor_start process_model=supervised oom_group=1", hog_start(oom_group=1), step_line(1)],
        True,
        137,
    ),
}


def run_demo(scenario: DemoRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    def rehearse(_client: Any, _pod: Any, on_line: Callable[[str], None] | None = None, **_: Any) -> rehearsal.Outcome:
        for line in scenario.lines:
            assert on_line is not None
            on_line(line)
        times: list[float | None] = [100.4 + n for n in range(len(scenario.lines))]
        end = 100.4 + len(scenario.lines) + 0.3
        return rehearsal.Outcome(
            scenario.killed, scenario.exit_code, 9.9, scenario.lines, scenario.termination_message, times, 100.0, end
        )

    engine = SimpleNamespace(info=lambda: {"MemTotal": 64 << 30})  # an engine with room for any limit here
    monkeypatch.setattr(demo, "engine", lambda: engine)
    monkeypatch.setattr(rehearsal, "leftovers", lambda *_: [])
    monkeypatch.setattr(rehearsal, "build_image", lambda *_, **__: "oom-killer:golden")
    monkeypatch.setattr(rehearsal, "rehearse", rehearse)
    capsys.readouterr()
    code = demo.main(scenario.overrides)
    verdict = capsys.readouterr().out.splitlines()[-1]  # the lines before it name the image, whose tag changes
    return f"exit {code}\n--- verdict\n{verdict}\n"


# ---------------------------------------------------------------------------------------------------------------


def titles() -> list[str]:
    """Every section's title, in the file's order: verify's scenarios, then the demo's."""
    return [f"verify: {title}" for title in SCENARIOS] + list(DEMO_SCENARIOS)


def sections(text: str) -> dict[str, str]:
    """The golden file's sections by title (each from its `=== title` line to the next)."""
    found: dict[str, str] = {}
    for part in text.split("=== ")[1:]:
        title, _, _ = part.partition("\n")
        found[title] = f"=== {part}"
    return found


def compare(title: str, said: str) -> None:
    """Hold what was said to the golden file's section (or, with GOLDEN_UPDATE=1, write it there)."""
    text = f"=== {title}\n{said}"
    if os.environ.get("GOLDEN_UPDATE") == "1":
        kept = sections(GOLDEN.read_text()) if GOLDEN.exists() else {}
        kept[title] = text
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("".join(kept[t] for t in titles() if t in kept))
    assert text == sections(GOLDEN.read_text()).get(title), (
        f"what {title} says changed: see tests/golden/verdicts.txt (GOLDEN_UPDATE=1 to accept it)"
    )


def test_the_golden_file_holds_each_scenario_and_no_other() -> None:
    assert list(sections(GOLDEN.read_text())) == titles()


@pytest.mark.parametrize("title", list(SCENARIOS))
def test_what_verify_says_is_unchanged(title: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    compare(f"verify: {title}", run_verify(SCENARIOS[title], monkeypatch, tmp_path))


@pytest.mark.parametrize("title", list(DEMO_SCENARIOS))
def test_what_the_demo_says_is_unchanged(
    title: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    compare(title, run_demo(DEMO_SCENARIOS[title], monkeypatch, capsys))
