"""Recorded runs to write reports from without a cluster or an engine: a game day of `verify` against a fake cluster
(each container's own log, Prometheus and Alertmanager answering over a fake clock), and `demo` runs with the engine's
run replaced by a recorded log. The report tests, the browser test and `python -m tests.screenshots` share them.

Built on the golden record's fakes (tests/test_verify_golden.py), with a log per container as the kubelet keeps it:
the current container's, and `previous=True` the one before.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oomtools import alert_client as prom
from oomtools import demo, rehearsal, verify
from oomtools.verify import observe
from tests import test_verify_golden as golden

LIMIT_MIB = 128
STEP_MIB = 16
POD = "oom-killer-7d9f-x2m"


def step_line(step: int) -> str:
    """A hog's step line, as on a cgroup v1 node: what it took, its RSS, the cgroup's charge and working set."""
    allocated = STEP_MIB * step
    usage = allocated + 14
    return (
        f"event=step step={step} allocated_mib={allocated} rss_mib={allocated + 9} cgroup_usage_mib={usage} "
        f"limit_pct={100 * usage / LIMIT_MIB:.1f} working_set_mib={allocated + 12} anon_mib={allocated + 8} "
        "file_mib=5 shmem_mib=0"
    )


START_LINE = (
    f"event=start pid=1 limit_mib={LIMIT_MIB} cgroup=v1:/kubepods/burstable/pod1/c increment_mib={STEP_MIB} "
    "interval_ms=1000 memory_kind=anonymous baseline_rss_mib=9 cgroup_usage_mib=14 reclaimable_mib=4 "
    "predicted_steps_earliest=7 predicted_steps=8 predicted_steps_latest=8 predicted_seconds=7.0"
)

# Each container: (its ID, when it started, when it was killed (None: still running), its last step).
RUNS: list[tuple[str, float, float | None, int]] = [
    ("containerd://c1", 0.0, 7.0, 6),
    ("containerd://c2", 9.0, 16.5, 7),
    ("containerd://c3", 18.5, None, 1),
]


def run_log(started: float, last_step: int) -> list[tuple[float, str]]:
    return [(started + 0.2, START_LINE)] + [(started + 0.3 + step, step_line(step)) for step in range(1, last_step + 1)]


class GameDayCluster(golden.Cluster):
    """The golden record's fake cluster, with each container's log kept apart (`container_logs`, by container ID)."""

    container_logs: dict[str, list[tuple[float, str]]]

    def read_namespaced_pod_log(self, name: str, namespace: str, _request_timeout: float, **how: Any) -> str:
        assert namespace == golden.NS
        listed = {p.metadata.name: p for p in self._latest(self.pods) or []}
        status = listed[name].status.container_statuses[0]
        state = status.last_state if how.get("previous") else status.state
        current = status.container_id or (state.terminated.container_id if state and state.terminated else None)
        container_id = state.terminated.container_id if how.get("previous") and state else current
        lines = [(t, text) for t, text in self.container_logs.get(container_id or "", []) if t <= self._now()]
        if how.get("timestamps"):
            return "".join(f"{golden.at(t).isoformat().replace('+00:00', 'Z')} {text}\n" for t, text in lines)
        return "".join(f"{text}\n" for _, text in lines)


def game_day_cluster(fake: golden.FakeTime) -> GameDayCluster:
    """Two OOM kills (steps 7 and 8 of 7..8), a back-off, a third run; the stack scaled to 0 at 20 s."""
    kills = [(started, ended, "OOMKilled", step_line(last), 137) for _, started, ended, last in RUNS if ended]
    cluster = GameDayCluster(
        fake.clock,
        [
            (0, golden.workload({"MEMORY_INCREMENT_MB": str(STEP_MIB), "INCREMENT_INTERVAL_MS": "1000"})),
            (20, golden.workload({}, replicas=0)),
        ],
        golden.kill_loop(kills),
    )
    cluster.pods.append((21, []))
    cluster.container_logs = {cid: run_log(started, last) for cid, started, _, last in RUNS}
    cluster.nodes = [golden.node("node-1")]
    for listing in cluster.pods:
        for one in listing[1]:
            one.spec.node_name = "node-1"
    return cluster


def working_set_bytes(at: float) -> float:
    """What cAdvisor read of the container's working set at `at`: the step's, as the hog's line says."""
    for _, started, ended, last in RUNS:
        if started <= at and (ended is None or at < ended):
            step = min(int(at - started - 0.3), last) if at - started >= 1.3 else 0
            return float((STEP_MIB * step + 12) << 20)
    return 0.0


def game_day_alerting(fake: golden.FakeTime) -> golden.Alerting:
    """Prometheus and Alertmanager as a well-kept cluster's: every rule loaded, kube-state-metrics scraped each kill,
    both expected alerts fired and were delivered, then resolved once the stack was scaled to 0."""
    t = golden.T0.timestamp()
    labels = {"namespace": golden.NS, "pod": POD, "container": "oom-killer"}
    alerting = golden.Alerting(
        fake.clock,
        firing={"ContainerOOMKilled": (10, 40), "ContainerCrashLooping": (18, 44)},
        held=[
            (12, prom.Routed({"alertname": "ContainerOOMKilled", **labels}, "active", ("memory-kills",))),
            (19, prom.Routed({"alertname": "ContainerCrashLooping", **labels}, "active", ("memory-kills",))),
        ],
    )
    kills = [ended for _, _, ended, _ in RUNS if ended is not None]
    alerting.series["kube_pod_container_status_last_terminated_timestamp"] = [
        (labels, [(t + ended + 3, t + ended) for ended in kills])
    ]
    alerting.series["ALERTS"] = [
        (
            {**labels, "alertname": name, "alertstate": "firing"},
            [(t + s, 1.0) for s in range(int(fired), int(resolved), 5)],
        )
        for name, (fired, resolved) in alerting.firing.items()
    ]
    alerting.series["container_memory_working_set_bytes"] = [
        (labels, [(t + second, working_set_bytes(second)) for second in range(0, 21, 2)])
    ]
    return alerting


ALERTMANAGER = ["--alertmanager", "http://alertmanager:9093"]
GAME_DAY_ARGS = [*golden.PROMETHEUS, *ALERTMANAGER, "--kills", "2", "--timeout", "90s"]


@dataclass
class Said:
    code: int
    out: str
    err: str


def run_verify(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Said:
    """verify against the game day's fake cluster, Prometheus and Alertmanager (or, with --from, against nothing)."""
    import kubernetes.client
    import kubernetes.config

    fake = golden.FakeTime()
    cluster = game_day_cluster(fake)
    monkeypatch.setattr(time, "sleep", fake.sleep)
    monkeypatch.setattr(observe, "chosen_context", lambda _kubeconfig, _context: "fake")  # no kubeconfig to read
    monkeypatch.setattr(kubernetes.config, "new_client_from_config", lambda **_: cluster.api_client)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda _client: cluster)
    monkeypatch.setattr(kubernetes.client, "AppsV1Api", lambda _client: cluster)
    game_day_alerting(fake).install(monkeypatch)
    out, err = io.StringIO(), io.StringIO()
    if "--from" in argv:  # the command as a user runs it: no cluster, no clock but the saved one
        code = verify.main(argv, out, err)
    else:
        argv = [*GAME_DAY_ARGS, *argv, "--outputs", json.dumps(golden.OUTPUTS)]
        code = verify.run(verify.parse_args(argv), out, err, clock=fake.clock)
    return Said(code, out.getvalue(), err.getvalue())


def verify_game_day(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Said:
    """The game day watched live: its report, saved results and JUnit in `folder`."""
    argv = ["--report", str(folder / "verify.html"), "--save", str(folder / "results.json")]
    return run_verify([*argv, "--junit", str(folder / "verify.xml")], monkeypatch)


# ---------------------------------------------------------------------------------------------------------------
# The demo


def demo_lines(last_step: int = 6) -> list[str]:
    return [START_LINE, *(step_line(step) for step in range(1, last_step + 1))]


SUPERVISED_LINES = [
    "event=supervisor_start process_model=supervised oom_group=0",
    START_LINE,
    *(step_line(step) for step in range(1, 8)),
    "event=child_exit pid=9 signal=SIGKILL oom_kill=1 container_survived=true",
    START_LINE,
    *(step_line(step) for step in range(1, 7)),
    "event=child_exit pid=10 signal=SIGKILL oom_kill=2 container_survived=true",
    START_LINE,
    step_line(1),
    "event=stop children=3 stopped_worker=11",
]


@dataclass
class DemoRun:
    overrides: list[str]
    lines: list[str]
    killed: bool
    exit_code: int
    termination_message: str = ""


DEMO_KILLED = DemoRun([], demo_lines(6), True, 137, step_line(6))
DEMO_EARLY = DemoRun([], demo_lines(3), True, 137, step_line(3))
DEMO_SUPERVISED = DemoRun(["--set", "processModel=supervised"], SUPERVISED_LINES, False, 0)
ENGINE_INFO = {
    "MemTotal": 64 << 30,
    "KernelVersion": "6.1.0-40-amd64",
    "CgroupVersion": "1",
    "CgroupDriver": "cgroupfs",
    "ServerVersion": "20.10.24+dfsg1",
}


def run_demo(run: DemoRun, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """demo.main with the engine's run replaced by the recorded one: a line a second from 100.4 s, the container
    started at 100 s and ended 0.3 s after its last line."""

    def rehearse(_client: Any, _pod: Any, on_line: Callable[[str], None] | None = None, **_: Any) -> rehearsal.Outcome:
        for line in run.lines:
            if on_line is not None:
                on_line(line)
        times: list[float | None] = [100.4 + n for n in range(len(run.lines))]
        end = 100.4 + len(run.lines) + 0.3
        return rehearsal.Outcome(
            run.killed, run.exit_code, end - 100.0, run.lines, run.termination_message, times, 100.0, end
        )

    engine = SimpleNamespace(info=lambda: dict(ENGINE_INFO))
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    monkeypatch.setattr(demo, "engine", lambda: engine)
    monkeypatch.setattr(rehearsal, "leftovers", lambda *_: [])
    monkeypatch.setattr(rehearsal, "build_image", lambda *_, **__: "oom-killer:recorded")
    monkeypatch.setattr(rehearsal, "rehearse", rehearse)
    return demo.main([*run.overrides, "--quiet", *argv])


def step_lines_of(lines: list[str]) -> int:
    return sum(line.startswith("event=step ") for line in lines)
