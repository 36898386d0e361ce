"""verify's detector coverage, without a cluster or a network: which signals saw each OOM kill it observed.

The kills are hand-made (the deaths and worker kills verify's watch records), Prometheus is a fake `samples(selector,
since, until)` that answers from a few series and honours the selector's matchers and the window (so a detector that
asks for the wrong series or the wrong time sees nothing), the kubelet's events are stand-ins with the fields the
client gives, and Alertmanager is what `alerts.alertmanager_alerts` returns: `alerts.Routed` objects.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from oomtools import verify
from oomtools.alert_client import DEFAULT_ALERTS, Routed
from oomtools.verdict import Item
from oomtools.verify import detectors
from oomtools.verify.detectors import AT_START, CONTAINER, UNREAD, WORKER, Coverage, Kill
from oomtools.verify.judge import coverage_checks
from oomtools.verify.observe import Delivery
from oomtools.verify.report import coverage_line, coverage_table
from workload import logfmt

NS = "oom-killer"
POD = "oom-killer-7d9f-x2m"
CONTAINER_NAME = "oom-killer"
WORKERS_POD = "queue-5c4b-k8s"
T0 = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
HOG_LINE = "event=step step=6 allocated_mib=96"
# What the stack's settings predict for a single process (OOMKilled and CrashLooping fire) and a supervised one.
SINGLE = {"ContainerOOMKilled": True, "ContainerCrashLooping": True, "ContainerOOMKillWithoutRestart": False}
SUPERVISED = {"ContainerOOMKilled": False, "ContainerCrashLooping": False, "ContainerOOMKillWithoutRestart": True}

KSM = "kube_pod_container_status_last_terminated_timestamp"
CADVISOR = "container_oom_events_total"

Series = tuple[dict[str, str], list[tuple[float, float]]]


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def ts(seconds: float) -> float:
    return at(seconds).timestamp()


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins: Prometheus' samples, the kubelet's events, what verify's watch observed


_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"')


class FakePrometheus:
    """`samples(selector, since, until)` from series kept by metric name: the series whose labels every `key="value"`
    matcher of the selector matches (an absent label is ""), each with its samples from `since` to `until` (a
    series without one in the window is left out, as Prometheus does). Every question asked is kept."""

    def __init__(self) -> None:
        self.series: dict[str, list[Series]] = {}
        self.asked: list[tuple[str, float, float]] = []

    def add(self, name: str, labels: dict[str, str], *points: tuple[float, float]) -> list[tuple[float, float]]:
        kept = list(points)
        self.series.setdefault(name, []).append(({"__name__": name, **labels}, kept))
        return kept  # to append samples to later

    def __call__(self, selector: str, since: float, until: float) -> list[Series]:
        self.asked.append((selector, since, until))
        name, brace, rest = selector.partition("{")
        assert brace, selector
        assert rest.endswith("}"), selector
        matchers = dict(_MATCHER.findall(rest[:-1]))
        assert ",".join(f'{key}="{value}"' for key, value in matchers.items()) == rest[:-1], selector
        found = []
        for labels, points in self.series.get(name, []):
            if all(labels.get(key, "") == value for key, value in matchers.items()):
                window = [(t, v) for t, v in points if since <= t <= until]
                if window:
                    found.append((dict(labels), window))
        return found


def pod_labels(pod: str = POD, container: str = CONTAINER_NAME, namespace: str = NS, **more: str) -> dict[str, str]:
    return {"namespace": namespace, "pod": pod, "container": container, **more}


def event(
    pod: str, reason: str, message: str, last: datetime.datetime | None, event_time: datetime.datetime | None = None
) -> Any:
    """An event as the Kubernetes client lists it (CoreV1Event): the fields the detector reads."""
    return SimpleNamespace(
        involved_object=SimpleNamespace(kind="Pod", name=pod, namespace=NS),
        reason=reason,
        message=message,
        last_timestamp=last,
        event_time=event_time,
    )


def death(
    container_id: str, finished: float, reason: str = "OOMKilled", message: str = HOG_LINE, pod: str = POD
) -> verify.Death:
    exit_code = 137 if reason == "OOMKilled" else 1
    return verify.Death(
        pod, CONTAINER_NAME, container_id, reason, exit_code, message, at(finished - 7), at(finished), 0
    )


def worker_kill(pod: str, seconds: float, container_id: str, oom_kill: int) -> verify.WorkerKill:
    fields = {"event": "child_exit", "signal": "SIGKILL", "oom_kill": str(oom_kill), "container_survived": "true"}
    return verify.WorkerKill(pod, "worker", at(seconds), fields, container_id)


def observed_with(
    deaths: Iterable[verify.Death] = (), worker_kills: Iterable[verify.WorkerKill] = ()
) -> verify.Observed:
    observed = verify.Observed()
    observed.deaths = {d.container_id: d for d in deaths}
    observed.worker_kills = {(w.pod, w.container, w.at.isoformat()): w for w in worker_kills}
    return observed


def container_kill(seconds: float = 7, pod: str = POD, container_id: str = "c1", hog_line: str = HOG_LINE) -> Kill:
    return Kill(CONTAINER, pod, CONTAINER_NAME, ts(seconds), container_id, 0, hog_line)


def a_worker_kill(seconds: float, number: int, container_id: str = "w1") -> Kill:
    return Kill(WORKER, WORKERS_POD, "worker", ts(seconds), container_id, number, "event=child_exit signal=SIGKILL")


def seen(
    kill: Kill,
    *,
    until: float = 120,
    events: Iterable[Any] | None = (),
    samples: FakePrometheus | None = None,
    alerts: tuple[str, ...] = (),
    delivery: Delivery | None = None,
) -> dict[str, str]:
    """Which detectors saw one kill, read `until` seconds after T0."""
    (coverage,) = detectors.read(
        [kill],
        NS,
        ts(until),
        events=None if events is None else list(events),
        samples=samples,
        alerts=alerts,
        delivery=delivery,
    )
    return coverage.seen


def check(checks: list[Item], name: str) -> Item:
    (found,) = [c for c in checks if c.name == name]
    return found


# ---------------------------------------------------------------------------------------------------------------
# The kills


def test_the_kills_are_the_oomkilled_deaths_and_the_worker_kills_numbered_per_container_oldest_first() -> None:
    observed = observed_with(
        deaths=[
            death("containerd://c1", 7),
            death("containerd://c2", 20, reason="Error", message="Traceback"),  # died, but not of an OOM kill
            death("containerd://c3", 30),
        ],
        # out of time order, as the logs may be read; two containers of the workers' pod (it restarted)
        worker_kills=[
            worker_kill(WORKERS_POD, 40, "containerd://w1", 2),
            worker_kill(WORKERS_POD, 25, "containerd://w2", 1),
            worker_kill(WORKERS_POD, 12, "containerd://w1", 1),
        ],
    )
    kills = detectors.kills_of(observed)
    assert [(k.kind, k.at, k.container_id, k.number) for k in kills] == [
        (CONTAINER, ts(7), "c1", 0),
        (WORKER, ts(12), "w1", 1),
        (WORKER, ts(25), "w2", 1),
        (CONTAINER, ts(30), "c3", 0),
        (WORKER, ts(40), "w1", 2),
    ]
    assert kills[0].pod == POD
    assert kills[0].container == CONTAINER_NAME
    assert kills[0].hog_line == HOG_LINE
    assert kills[0].label == f"{POD}/{CONTAINER_NAME}@12:00:07"
    assert (kills[1].pod, kills[1].container) == (WORKERS_POD, "worker")  # the worker's pod and container
    assert logfmt.parse(kills[1].hog_line) == {
        "event": "child_exit",
        "signal": "SIGKILL",
        "oom_kill": "1",
        "container_survived": "true",
    }


def test_no_oom_kill_no_kills() -> None:
    observed = observed_with(deaths=[death("containerd://c1", 7, reason="Error"), death("c2", 9, reason="Completed")])
    assert detectors.kills_of(observed) == []


# ---------------------------------------------------------------------------------------------------------------
# kube-state-metrics


def test_kube_state_metrics_saw_a_container_kill_when_its_last_terminated_timestamp_took_the_finished_at() -> None:
    kill = container_kill(7)
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(uid="u1"), (ts(0), ts(-50)), (ts(10), ts(7)), (ts(20), ts(7)))
    assert seen(kill, samples=prometheus)["kube_state_metrics"] == "yes"


@pytest.mark.parametrize(
    ("labels", "value"),
    [
        (pod_labels(), ts(-50)),  # the death before: the scrapes after the kill still show its finishedAt
        (pod_labels(), ts(8)),  # a second off
        (pod_labels(pod="oom-killer-7d9f-other"), ts(7)),  # another pod's kill at the same second
        (pod_labels(container="sidecar"), ts(7)),
        (pod_labels(namespace="shop"), ts(7)),
    ],
)
def test_kube_state_metrics_did_not_see_the_kill_without_its_finished_at_on_its_series(
    labels: dict[str, str], value: float
) -> None:
    prometheus = FakePrometheus()
    prometheus.add(KSM, labels, (ts(10), value), (ts(20), value))
    assert seen(container_kill(7), samples=prometheus)["kube_state_metrics"] == "no"


def test_a_finished_at_scraped_only_before_the_kill_is_not_seen() -> None:
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(5), ts(7)))  # impossible for a real exporter: the window must exclude it
    assert seen(container_kill(7), samples=prometheus)["kube_state_metrics"] == "no"


def test_two_kills_between_scrapes_the_first_is_missed_and_the_detector_check_names_it() -> None:
    """kube-state-metrics#2153: the container was killed, restarted and killed again between two scrapes, so the
    scrapes show the second kill's finishedAt only."""
    kills = detectors.kills_of(observed_with(deaths=[death("containerd://c1", 7), death("containerd://c2", 19)]))
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(0), ts(-50)), (ts(30), ts(19)), (ts(60), ts(19)))
    coverages = detectors.read(kills, NS, ts(90), events=[], samples=prometheus, alerts=(), delivery=None)
    assert [c.seen["kube_state_metrics"] for c in coverages] == ["no", "yes"]
    ksm = check(coverage_checks(coverages, SINGLE), "detector kube_state_metrics")
    assert not ksm.ok
    assert ksm.detail == f"saw 1 of 2 kills; missed {POD}/{CONTAINER_NAME}@12:00:07"


def test_a_worker_kill_is_never_kube_state_metrics_and_is_not_held_against_it() -> None:
    kill = a_worker_kill(12, 1)
    prometheus = FakePrometheus()
    labels = pod_labels(pod=WORKERS_POD, container="worker")
    prometheus.add(KSM, labels, (ts(20), ts(12)))  # even a sample with the kill's very second
    coverages = detectors.read([kill], NS, ts(60), events=[], samples=prometheus, alerts=(), delivery=None)
    assert coverages[0].seen["kube_state_metrics"] == "no"
    assert check(coverage_checks(coverages, SUPERVISED), "detector kube_state_metrics").ok


# ---------------------------------------------------------------------------------------------------------------
# cAdvisor


def cadvisor_series(prometheus: FakePrometheus, container_id: str, *points: tuple[float, float]) -> None:
    labels = pod_labels(pod=WORKERS_POD, container="worker", id=f"/kubepods/burstable/podu2/{container_id}")
    prometheus.add(CADVISOR, {**labels, "name": container_id, "image": "oom-killer:1"}, *points)


def test_cadvisor_saw_worker_kill_n_once_the_containers_counter_reached_n() -> None:
    first, second = a_worker_kill(12, 1), a_worker_kill(30, 2)
    prometheus = FakePrometheus()
    cadvisor_series(prometheus, "w1", (ts(5), 0), (ts(15), 1), (ts(25), 1), (ts(35), 1))  # stopped at 1
    cadvisor_series(prometheus, "w0", (ts(5), 3), (ts(35), 4))  # the container before it: another container's count
    assert seen(first, samples=prometheus)["cadvisor"] == "yes"
    assert seen(second, samples=prometheus)["cadvisor"] == "no"
    prometheus.series[CADVISOR][0][1].append((ts(45), 2))
    assert seen(second, samples=prometheus)["cadvisor"] == "yes"
    assert seen(second, samples=prometheus, until=40)["cadvisor"] == "no"  # not yet scraped then


@pytest.mark.parametrize("label", ["id", "name"])
def test_cadvisor_finds_the_container_by_its_id_or_its_name_label_alone(label: str) -> None:
    # cAdvisor's series carry the runtime's ID in `id` (the cgroup path) and in `name`; some setups only one of them.
    prometheus = FakePrometheus()
    labels = pod_labels(pod=WORKERS_POD, container="worker")
    prometheus.add(CADVISOR, {**labels, label: "/kubepods/burstable/podu2/w1"}, (ts(15), 1))
    assert seen(a_worker_kill(12, 1), samples=prometheus)["cadvisor"] == "yes"


def test_cadvisor_counts_only_the_series_of_the_container_the_kill_was_in() -> None:
    prometheus = FakePrometheus()
    cadvisor_series(prometheus, "w0", (ts(15), 1), (ts(35), 2))
    assert seen(a_worker_kill(12, 1, container_id="w1"), samples=prometheus)["cadvisor"] == "no"
    assert seen(a_worker_kill(12, 1, container_id=""), samples=prometheus)["cadvisor"] == "no"  # no ID: no series
    other_pod = FakePrometheus()
    labels = pod_labels(pod="queue-5c4b-other", container="worker", id="/kubepods/burstable/podu9/w1")
    other_pod.add(CADVISOR, labels, (ts(15), 1))
    assert seen(a_worker_kill(12, 1), samples=other_pod)["cadvisor"] == "no"


# ---------------------------------------------------------------------------------------------------------------
# The kubelet's events


@pytest.mark.parametrize(
    ("events", "saw"),
    [
        ([event(POD, "OOMKilling", "Memory cgroup out of memory: Killed process 4242 (python)", at(9))], "yes"),
        ([event(POD, "SystemOOM", "System OOM encountered, victim process: python", None, at(8))], "yes"),
        # a real false positive: stock Kubernetes' only event in a kill loop names the container, not an OOM
        ([event(POD, "BackOff", f"Back-off restarting failed container {CONTAINER_NAME} in pod {POD}", at(30))], "no"),
        ([event(POD, "OOMKilling", "Memory cgroup out of memory: Killed process 1 (python)", at(-60))], "no"),
        ([event(POD, "OOMKilling", "Memory cgroup out of memory", None, at(-60))], "no"),
        ([event("web-6f7d-abc", "OOMKilling", "Memory cgroup out of memory", at(9))], "no"),
        ([event(POD, "Started", "Started container oom-killer", at(9))], "no"),
        # the OOM in the message alone (a runtime's own reason), after another pod's event
        (
            [
                event("web-6f7d-abc", "OOMKilling", "Memory cgroup out of memory", at(9)),
                event(POD, "ContainerDied", "OOM: the kernel killed python", at(9)),
            ],
            "yes",
        ),
        ([], "no"),
        (None, "-"),  # no right to list events: not read, rather than a "no" that would be a finding
    ],
)
def test_a_kubelet_event_counts_when_it_names_an_oom_on_the_pod_at_the_kill_or_after(
    events: list[Any] | None, saw: str
) -> None:
    assert seen(container_kill(7), events=events)["kubelet_event"] == saw


# ---------------------------------------------------------------------------------------------------------------
# The alerts in Prometheus, and in Alertmanager


def alerts_series(prometheus: FakePrometheus, name: str, state: str = "firing", pod: str = POD) -> list[Any]:
    return prometheus.add("ALERTS", pod_labels(pod=pod, alertname=name, alertstate=state, severity="warning"))


def test_an_alert_saw_the_kill_when_it_fired_for_its_pod_and_container_at_the_kill_or_after() -> None:
    kill = container_kill(7)
    prometheus = FakePrometheus()
    alerts_series(prometheus, "ContainerOOMKilled").extend([(ts(70), 1), (ts(80), 1)])
    alerts_series(prometheus, "ContainerCrashLooping").extend([(ts(-100), 1), (ts(-90), 1)])  # a loop before it
    alerts_series(prometheus, "ContainerOOMKillWithoutRestart", state="pending").extend([(ts(70), 1)])
    alerts_series(prometheus, "ContainerOOMKillWithoutRestart", pod="web-6f7d-abc").extend([(ts(70), 1)])
    coverage = seen(kill, samples=prometheus, alerts=DEFAULT_ALERTS)
    assert coverage["alert ContainerOOMKilled"] == "yes"
    assert coverage["alert ContainerCrashLooping"] == "no"
    assert coverage["alert ContainerOOMKillWithoutRestart"] == "no"  # pending for it, firing for another pod only
    assert seen(kill, samples=prometheus, alerts=DEFAULT_ALERTS, until=60)["alert ContainerOOMKilled"] == "no"


def routed(name: str, state: str = "active", receivers: tuple[str, ...] = ("memory-kills",), pod: str = POD) -> Routed:
    return Routed({"alertname": name, "namespace": NS, "pod": pod, "container": CONTAINER_NAME}, state, receivers)


def test_delivery_holds_only_alerts_active_for_some_receiver() -> None:
    delivery = Delivery()
    new = delivery.record(
        [
            routed("ContainerOOMKilled"),
            routed("ContainerCrashLooping", state="suppressed"),  # silenced or inhibited
            routed("ContainerOOMKillWithoutRestart", receivers=()),  # routed nowhere
            routed("KubePodCrashLooping", state="unprocessed"),
        ],
        ts(70),
    )
    assert new == [("ContainerOOMKilled", POD, CONTAINER_NAME, ("memory-kills",))]
    assert delivery.holds("ContainerOOMKilled")
    assert not delivery.holds("ContainerCrashLooping")
    assert not delivery.holds("ContainerOOMKillWithoutRestart")
    assert not delivery.holds("KubePodCrashLooping")
    # held again: not new; a second pod's is
    again = delivery.record(
        [routed("ContainerOOMKilled"), routed("ContainerOOMKilled", pod="oom-killer-7d9f-b")], ts(80)
    )
    assert again == [("ContainerOOMKilled", "oom-killer-7d9f-b", CONTAINER_NAME, ("memory-kills",))]


def test_delivered_means_held_for_the_kills_pod_and_container_at_the_kill_or_after() -> None:
    kill = container_kill(7)
    before, after = Delivery(), Delivery()
    before.record([routed("ContainerOOMKilled")], ts(5))  # still active from the kill before, gone since
    after.record([routed("ContainerOOMKilled", state="suppressed")], ts(5))
    after.record([routed("ContainerOOMKilled")], ts(70))
    after.record([routed("ContainerCrashLooping", pod="oom-killer-7d9f-b")], ts(70))
    assert seen(kill, alerts=DEFAULT_ALERTS, delivery=before)["delivered ContainerOOMKilled"] == "no"
    coverage = seen(kill, alerts=DEFAULT_ALERTS, delivery=after)
    assert coverage["delivered ContainerOOMKilled"] == "yes"
    assert coverage["delivered ContainerCrashLooping"] == "no"


# ---------------------------------------------------------------------------------------------------------------
# What was read, and the checks


def test_without_prometheus_or_alertmanager_their_detectors_are_unread_and_not_judged() -> None:
    kills = [container_kill(7), a_worker_kill(12, 1)]
    coverages = detectors.read(kills, NS, ts(60), events=[], samples=None, alerts=DEFAULT_ALERTS, delivery=None)
    for coverage in coverages:
        unread = {name for name, value in coverage.seen.items() if value == UNREAD}
        assert unread == {"kube_state_metrics", "cadvisor"} | {
            f"{what} {name}" for what in ("alert", "delivered") for name in DEFAULT_ALERTS
        }
    checks = coverage_checks(coverages, SINGLE)
    assert [c.name for c in checks] == ["detector pod_status", "detector kubelet_event", "detector hog_line"]
    assert all(c.ok for c in checks)


def test_with_prometheus_but_no_alertmanager_only_delivery_is_unread() -> None:
    coverage = seen(container_kill(7), samples=FakePrometheus(), alerts=("ContainerOOMKilled",))
    assert {name for name, value in coverage.items() if value == UNREAD} == {"delivered ContainerOOMKilled"}


def test_a_kill_no_monitoring_signal_saw_fails_the_check_naming_it_the_kubelets_events_never_do() -> None:
    seen_kill, unseen_kill = container_kill(7), container_kill(200, container_id="c2")
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(10), ts(7)), (ts(180), ts(7)))  # the second kill never scraped
    coverages = detectors.read(
        [seen_kill, unseen_kill], NS, ts(260), events=[], samples=prometheus, alerts=(), delivery=None
    )
    checks = coverage_checks(coverages, SINGLE)
    monitoring = check(checks, "every kill seen by the monitoring")
    assert not monitoring.ok
    assert monitoring.detail == f"{POD}/{CONTAINER_NAME}@12:03:20"
    events = check(checks, "detector kubelet_event")
    assert events.ok  # reported only: stock Kubernetes sends no event for a kill
    assert events.detail == "saw 0 of 2 kills"
    # seen by some monitoring signal, the kubelet's OOM event included: the check passes
    oom_event = event(POD, "OOMKilling", "Memory cgroup out of memory", at(201))
    coverages = detectors.read(
        [seen_kill, unseen_kill], NS, ts(260), events=[oom_event], samples=prometheus, alerts=(), delivery=None
    )
    monitoring = check(coverage_checks(coverages, SINGLE), "every kill seen by the monitoring")
    assert monitoring.ok
    assert monitoring.detail == "all 2 kills"


def test_an_expected_alert_that_missed_a_kill_of_its_kind_fails_its_detector_check() -> None:
    container, worker = container_kill(7), a_worker_kill(12, 1)
    prometheus = FakePrometheus()
    coverages = detectors.read(
        [container, worker], NS, ts(60), events=[], samples=prometheus, alerts=DEFAULT_ALERTS, delivery=None
    )
    checks = coverage_checks(coverages, SINGLE)
    fired = check(checks, "detector alert ContainerOOMKilled")
    assert not fired.ok
    assert fired.detail == f"saw 0 of 2 kills; missed {POD}/{CONTAINER_NAME}@12:00:07"  # the worker's is not its
    assert check(checks, "detector alert ContainerOOMKillWithoutRestart").ok  # not expected where one process runs
    supervised = check(coverage_checks(coverages, SUPERVISED), "detector alert ContainerOOMKillWithoutRestart")
    assert not supervised.ok
    assert supervised.detail.endswith(f"missed {WORKERS_POD}/worker@12:00:12")


# ---------------------------------------------------------------------------------------------------------------
# collect: reading until the signals show the last kills


class FakeTime:
    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert len(self.slept) < 1000, "still sleeping: collect never stops"
        self.slept.append(seconds)
        self.now += seconds


def collect(
    kills: list[Kill],
    time: FakeTime,
    *,
    samples: FakePrometheus | None,
    delivery: Delivery | None = None,
    alerts: tuple[str, ...] = (),
    grace: float = 120,
    polls: list[float] | None = None,
    readings: list[float] | None = None,
) -> list[Coverage]:
    def events() -> list[Any]:
        if readings is not None:
            readings.append(time.now)
        return []

    def poll(now: float) -> None:
        if polls is not None:
            polls.append(now)

    return detectors.collect(
        kills,
        NS,
        events=events,
        samples=samples,
        alerts=alerts,
        alerts_expected=dict.fromkeys(alerts, False),
        delivery=delivery,
        poll_alertmanager=poll,
        grace=grace,
        clock=time.clock,
        sleep=time.sleep,
    )


def test_collect_reads_again_until_the_last_kill_is_scraped_then_stops() -> None:
    kill = container_kill(7)
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(0), ts(-50)), (ts(14), ts(7)))  # scraped 5 s after the watch ended
    time, readings = FakeTime(ts(9)), list[float]()
    (coverage,) = collect([kill], time, samples=prometheus, readings=readings)
    assert coverage.seen["kube_state_metrics"] == "yes"
    assert readings == [ts(9), ts(12), ts(15)]  # the third reading saw it, and was the last
    assert len(time.slept) == 2


def test_collect_gives_up_at_the_grace_with_what_it_has() -> None:
    kill = container_kill(7)
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(0), ts(-50)), (ts(14), ts(-50)))  # never shows this kill
    time, readings = FakeTime(ts(9)), list[float]()
    (coverage,) = collect([kill], time, samples=prometheus, grace=10, readings=readings)
    assert coverage.seen["kube_state_metrics"] == "no"
    assert readings[-1] >= ts(19)  # read once more at the grace, then gave up
    assert ts(19) <= time.now < ts(19) + 3 + 1e-6
    assert len(readings) == len(time.slept) + 1


def test_collect_polls_alertmanager_until_it_holds_the_alert_for_the_kill() -> None:
    kill = container_kill(7)
    delivery, time, polls = Delivery(), FakeTime(ts(9)), list[float]()
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(8), ts(7)))
    alerts_series(prometheus, "ContainerOOMKilled").extend([(ts(10), 1)])  # fired at once, held 5 s later

    def poll(now: float) -> None:
        polls.append(now)
        if now >= ts(15):  # group_wait over
            delivery.record([routed("ContainerOOMKilled")], now)

    (coverage,) = detectors.collect(
        [kill],
        NS,
        events=list,
        samples=prometheus,
        alerts=("ContainerOOMKilled",),
        alerts_expected={"ContainerOOMKilled": True},
        delivery=delivery,
        poll_alertmanager=poll,
        grace=120,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert coverage.seen["delivered ContainerOOMKilled"] == "yes"
    assert polls == [ts(9), ts(12), ts(15)]


def test_collect_without_prometheus_or_alertmanager_reads_once_and_never_sleeps() -> None:
    kill = container_kill(7, hog_line="")  # its hog line missing: reading again would not change that
    time, readings, polls = FakeTime(ts(9)), list[float](), list[float]()
    (coverage,) = collect([kill], time, samples=None, readings=readings, polls=polls, alerts=("ContainerOOMKilled",))
    assert readings == [ts(9)]
    assert time.slept == []
    assert polls == []
    assert coverage.seen["hog_line"] == "no"
    assert coverage.seen["kube_state_metrics"] == UNREAD


# ---------------------------------------------------------------------------------------------------------------
# What is printed


def coverage_of(kill: Kill, values: dict[str, str]) -> Coverage:
    return Coverage(kill, dict(values))


COLUMNS = ("pod_status", "kubelet_event", "kube_state_metrics", "cadvisor", "alert ContainerOOMKilled", "hog_line")


def test_the_coverage_table_is_a_header_then_a_row_per_kill_its_columns_aligned() -> None:
    long_pod = container_kill(7, pod="oom-killer-7d9f-with-a-long-name")
    coverages = [
        coverage_of(long_pod, dict(zip(COLUMNS, ["yes", "no", "yes", "no", "-", "yes"], strict=True))),
        coverage_of(a_worker_kill(12, 1), dict(zip(COLUMNS, ["no", "no", "no", "yes", "-", "yes"], strict=True))),
        coverage_of(container_kill(30), dict(zip(COLUMNS, ["yes", "yes", "no", "-", "no", "no"], strict=True))),
    ]
    table = coverage_table(coverages)
    assert len(table) == 4

    def cells(row: str) -> list[tuple[int, str]]:  # each cell and where it starts: cells are 2 spaces apart at least
        return [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", row)]

    header = cells(table[0])
    assert [text for _, text in header] == ["kill", "kind", *COLUMNS]
    for row, coverage in zip(table[1:], coverages, strict=True):
        assert [start for start, _ in cells(row)] == [start for start, _ in header], table
        assert [text for _, text in cells(row)] == [coverage.kill.label, coverage.kill.kind, *coverage.seen.values()]
    assert all(row == row.rstrip() for row in table)
    assert coverage_table([]) == []


def test_the_coverage_line_is_logfmt_with_a_key_per_detector() -> None:
    values = dict(zip(COLUMNS, ["yes", "no", "yes", "-", "no", "yes"], strict=True))
    values["delivered ContainerOOMKilled"] = "-"
    line = coverage_line(coverage_of(container_kill(7), values))
    assert logfmt.parse(line) == {
        "event": "coverage",
        "pod": POD,
        "container": CONTAINER_NAME,
        "kind": "container",
        "at": "2026-11-30T12:00:07+00:00",
        "pod_status": "yes",
        "kubelet_event": "no",
        "kube_state_metrics": "yes",
        "cadvisor": "-",
        "alert_ContainerOOMKilled": "no",
        "hog_line": "yes",
        "delivered_ContainerOOMKilled": "-",
    }


# ---------------------------------------------------------------------------------------------------------------
# The options


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--alertmanager", "http://127.0.0.1:9093"], "--alertmanager needs --prometheus"),
        (["--detector-grace", "soon"], "--detector-grace"),
        (["--prometheus", "http://p", "--detector-grace", "0"], "--detector-grace"),
        (["--detector-grace", "30s"], "--detector-grace needs --prometheus"),
    ],
)
def test_bad_detector_options_are_exit_2_in_one_line_naming_the_option(argv: list[str], says: str) -> None:
    err = io.StringIO()
    assert verify.main([*argv, "--outputs", "/no/such/outputs.json"], out=io.StringIO(), err=err) == 2
    (line,) = err.getvalue().splitlines()
    assert line.startswith("verify: ")
    assert says in line


def test_the_detector_options_are_read() -> None:
    args = verify.parse_args(["--prometheus", "http://p", "--alertmanager", "http://a", "--detector-grace", "90s"])
    assert (args.alertmanager, args.detector_grace) == ("http://a", 90.0)
    assert verify.parse_args([]).detector_grace == 120.0


# ---------------------------------------------------------------------------------------------------------------
# Sharp edges (issue 28): each test below fails where the detector's rule is moved by a step


def an_at_start_kill(seconds: float = 9, container_id: str = "c2") -> Kill:
    """A tmpfs restart the kernel killed before its first step: no line of its own."""
    return Kill(AT_START, POD, CONTAINER_NAME, ts(seconds), container_id, 0, "")


def test_a_tmpfs_restart_killed_before_its_first_step_is_at_start_and_its_first_run_never_is() -> None:
    restart = death("containerd://c2", 9, message="")
    first = dataclasses.replace(death("containerd://c1", 7, message=""), first_run=True)
    stepped = death("containerd://c3", 20)
    observed = observed_with(deaths=[first, restart, stepped])
    tmpfs = {k.container_id: k.kind for k in detectors.kills_of(observed, restarts_into_full_pod=True)}
    assert tmpfs == {"c1": CONTAINER, "c2": AT_START, "c3": CONTAINER}
    heap = {k.container_id: k.kind for k in detectors.kills_of(observed, restarts_into_full_pod=False)}
    assert heap == {"c1": CONTAINER, "c2": CONTAINER, "c3": CONTAINER}


def test_kube_state_metrics_is_held_to_a_kill_at_start_too() -> None:
    # The container ended (OOMKilled, 137) as any container kill does: kube-state-metrics has its finishedAt to show.
    kill = an_at_start_kill(9)
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(10), ts(-50)))  # still the kill before's finishedAt
    coverages = detectors.read([kill], NS, ts(60), events=[], samples=prometheus, alerts=(), delivery=None)
    assert coverages[0].seen["kube_state_metrics"] == "no"
    ksm = check(coverage_checks(coverages, SINGLE), "detector kube_state_metrics")
    assert not ksm.ok
    assert ksm.detail == f"saw 0 of 1 kills; missed {POD}/{CONTAINER_NAME}@12:00:09"
    assert check(coverage_checks(coverages, SINGLE), "detector pod_status").ok  # the pod's status did show it


def test_an_expected_alert_is_held_to_a_kill_at_start_too() -> None:
    kill = an_at_start_kill(9)
    coverages = detectors.read(
        [kill], NS, ts(60), events=[], samples=FakePrometheus(), alerts=("ContainerOOMKilled",), delivery=Delivery()
    )
    for detector in ("alert ContainerOOMKilled", "delivered ContainerOOMKilled"):
        missed = check(coverage_checks(coverages, SINGLE), f"detector {detector}")
        assert not missed.ok, detector
        assert missed.detail.endswith(f"missed {POD}/{CONTAINER_NAME}@12:00:09")
    # not held to a kill at start where the settings expect the alert quiet (a supervised stack's)
    assert check(coverage_checks(coverages, SUPERVISED), "detector alert ContainerOOMKilled").ok


def test_the_pods_status_never_shows_a_workers_kill_and_is_not_held_to_one() -> None:
    coverages = detectors.read([a_worker_kill(12, 1)], NS, ts(60), events=[], samples=None, alerts=(), delivery=None)
    assert coverages[0].seen["pod_status"] == "no"
    pod_status = check(coverage_checks(coverages, SUPERVISED), "detector pod_status")
    assert pod_status.ok
    assert pod_status.detail == "saw 0 of 1 kills"
    assert seen(container_kill(7))["pod_status"] == "yes"


def test_cadvisor_never_saw_a_container_kill_whose_series_stayed_at_0() -> None:
    # A container's kill is its first (number 0 stands for "the container's only one"): the count must reach 1.
    kill = container_kill(7, container_id="c1")
    prometheus = FakePrometheus()
    labels = pod_labels(id="/kubepods/burstable/podu1/c1", name="c1")
    prometheus.add(CADVISOR, labels, (ts(0), 0), (ts(6), 0))  # its cgroup went before a scrape counted the kill
    assert seen(kill, samples=prometheus)["cadvisor"] == "no"
    prometheus.series[CADVISOR][0][1].append((ts(6.5), 1))
    assert seen(kill, samples=prometheus)["cadvisor"] == "yes"


def test_cadvisor_counts_samples_stamped_before_the_kill_on_a_clock_up_to_an_hour_behind_the_nodes() -> None:
    # The kill's time is the node's (the kubelet's finishedAt, its stamp on the supervisor's line); the samples' are
    # Prometheus': a count can only reach n after the nth kill, so a sample showing it counts however it is stamped.
    prometheus = FakePrometheus()
    cadvisor_series(prometheus, "w1", (ts(1200 - 1800), 1))  # Prometheus' clock half an hour behind the node's
    assert seen(a_worker_kill(1200, 1), samples=prometheus, until=1300)["cadvisor"] == "yes"
    late = FakePrometheus()
    cadvisor_series(late, "w1", (ts(1200 - 5), 1))  # scraped between the kernel's kill and the kubelet's stamp
    assert seen(a_worker_kill(1200, 1), samples=late, until=1300)["cadvisor"] == "yes"


@pytest.mark.parametrize(
    ("seconds_before_the_kill", "saw"),
    # Kubernetes stamps events and finishedAt in whole seconds: an event up to a second before the kill is its own;
    # earlier is the kill before's.
    [(0, "yes"), (0.5, "yes"), (1, "yes"), (1.5, "no"), (2, "no")],
)
def test_an_oom_event_counts_from_a_second_before_the_kill(seconds_before_the_kill: float, saw: str) -> None:
    oom = event(POD, "OOMKilling", "Memory cgroup out of memory", at(7 - seconds_before_the_kill))
    assert seen(container_kill(7), events=[oom])["kubelet_event"] == saw


def test_collect_does_not_wait_for_the_signals_verify_reads_itself() -> None:
    # The hog's line is missing (its termination message lost): reading again would never change it, nor the pod's
    # status: once kube-state-metrics shows the kill, collect is done.
    kill = container_kill(7, hog_line="")
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(8), ts(7)))
    time, readings = FakeTime(ts(9)), list[float]()
    (coverage,) = collect([kill], time, samples=prometheus, readings=readings)
    assert coverage.seen["hog_line"] == "no"
    assert readings == [ts(9)]
    assert time.slept == []


def test_collect_does_not_wait_for_a_signal_it_cannot_read() -> None:
    # Prometheus but no Alertmanager: the alert fired and kube-state-metrics shows the kill; its delivery is not
    # read ("-") and never will be, so there is nothing more to wait for.
    kill = container_kill(7)
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(8), ts(7)))
    alerts_series(prometheus, "ContainerOOMKilled").extend([(ts(8), 1)])
    time = FakeTime(ts(9))
    (coverage,) = detectors.collect(
        [kill],
        NS,
        events=list,
        samples=prometheus,
        alerts=("ContainerOOMKilled",),
        alerts_expected={"ContainerOOMKilled": True},
        delivery=None,
        poll_alertmanager=lambda _now: None,
        grace=120,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert coverage.seen["delivered ContainerOOMKilled"] == UNREAD
    assert coverage.seen["alert ContainerOOMKilled"] == "yes"
    assert time.slept == []


@pytest.mark.parametrize(
    ("detector", "kinds"),
    [
        ("pod_status", {CONTAINER, AT_START}),
        ("kube_state_metrics", {CONTAINER, AT_START}),
        ("cadvisor", {WORKER}),
        ("hog_line", {CONTAINER, WORKER}),
        ("kubelet_event", set()),  # made for no kill: reported, never judged
        ("alert ContainerOOMKilled", {CONTAINER, AT_START}),
        ("delivered ContainerOOMKillWithoutRestart", {WORKER}),
        ("alert ContainerCrashLooping", set()),  # not expected by these settings
    ],
)
def test_each_detector_is_held_to_the_kinds_of_kill_it_is_made_to_see(detector: str, kinds: set[str]) -> None:
    expected = {"ContainerOOMKilled": True, "ContainerOOMKillWithoutRestart": True, "ContainerCrashLooping": False}
    assert detectors.expected_kinds(detector, expected) == kinds


def test_collect_reads_a_last_time_at_the_grace_itself_and_not_after() -> None:
    prometheus = FakePrometheus()
    prometheus.add(KSM, pod_labels(), (ts(0), ts(-50)))  # never shows the kill
    time, readings = FakeTime(ts(9)), list[float]()
    collect([container_kill(7)], time, samples=prometheus, grace=9, readings=readings)
    assert readings == [ts(9), ts(12), ts(15), ts(18)]  # the grace ends at 18 s: that reading is the last


def test_a_kill_before_the_first_step_is_a_container_kill_unless_the_pod_restarts_full() -> None:
    observed = observed_with(deaths=[death("containerd://c1", 7, message="")])
    assert [kill.kind for kill in detectors.kills_of(observed)] == [CONTAINER]
    assert [kill.kind for kill in detectors.kills_of(observed, restarts_into_full_pod=True)] == [AT_START]
