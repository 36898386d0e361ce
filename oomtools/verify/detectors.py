"""Which signals saw each kill: make verify's detector coverage, the table an SRE wants after a game day.

For each OOM kill verify observed through the API (a container the kubelet reports OOMKilled, or a supervised
worker whose supervisor logged its SIGKILL), it reads every signal a user's monitoring has:

- `pod_status`: the kubelet's container status says OOMKilled (a worker's kill never shows there);
- `kubelet_event`: an event on the pod that names an OOM (stock Kubernetes sends none for a container's kill: only
  `BackOff` once it loops; node-problem-detector's `OOMKilling` would count);
- `kube_state_metrics`: `kube_pod_container_status_last_terminated_timestamp` took the kill's very finishedAt, so
  kube-state-metrics showed this kill in a scrape (two kills between scrapes show as one: kube-state-metrics#2153);
- `cadvisor`: the kubelet's `container_oom_events_total` for the container the kill happened in counted it (for a
  worker: the count reached the kill's number; for a container that died: its series reached 1 before it went);
- `alert <name>`: the alert fired in Prometheus for that pod and container at the kill or after it;
- `delivered <name>`: Alertmanager held that alert active, routed to a receiver, at the kill or after it;
- `hog_line`: the hog's own last line is there (the termination message is its last step; the supervisor's
  `event=child_exit` line for a worker).

A kill that none of the monitoring signals (all but the pod's status and the hog's line, which verify itself reads)
saw is a finding; so is a signal that misses the kills it is made for (EXPECTED).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from oomtools import alert_catalogue, verdict
from oomtools.verify.observe import Death, Observed

# Delivery (what Alertmanager held) is read by observe.py; named here too for the code that took it from here.
from oomtools.verify.observe import Delivery as Delivery

YES: Final = "yes"
NO: Final = "no"
UNREAD: Final = "-"  # not read: no --prometheus, or no --alertmanager

CONTAINER: Final = "container"  # the kill ended the container (OOMKilled, exit code 137)
WORKER: Final = "worker"  # the kill took a worker; the container lived on
# A tmpfs run's restart the kernel killed before its first step, in a pod its emptyDir still fills: it ended the
# container as any kill does, but the hog never got to write a line.
AT_START: Final = "at-start"
# The signals verify reads itself to see a kill at all: the others are the user's monitoring.
OWN: Final = ("pod_status", "hog_line")
# What is read with no Prometheus or Alertmanager given: a kill none of the rest saw is a finding only where they were.
NO_SIGNAL_OF_ITS_OWN: Final = (*OWN, "kubelet_event")


@dataclass(frozen=True)
class Kill:
    kind: str  # CONTAINER, AT_START or WORKER
    pod: str
    container: str
    at: float  # the kubelet's finishedAt, or the kubelet's stamp on the supervisor's line
    container_id: str  # the runtime's ID (no scheme) of the container killed, or that the worker ran in
    number: int  # a worker's: its kill's number among the container's worker kills (1 for the first)
    hog_line: str

    @property
    def label(self) -> str:
        stamp = datetime.datetime.fromtimestamp(self.at, datetime.UTC).strftime("%H:%M:%S")
        return f"{self.pod}/{self.container}@{stamp}"


def bare_id(container_id: str) -> str:
    """`containerd://abc…` → `abc…` (the form cAdvisor's `id` and `name` labels carry)."""
    return container_id.rpartition("://")[2]


def kills_of(observed: Observed, restarts_into_full_pod: bool = False) -> list[Kill]:
    """Every OOM kill verify observed, oldest first; with restarts_into_full_pod (a tmpfs hog), a container killed
    before its first step line is AT_START."""

    def kind(death: Death) -> str:
        return (
            AT_START if verdict.killed_at_start(restarts_into_full_pod, death.message, death.first_run) else CONTAINER
        )

    kills = [
        Kill(kind(d), d.pod, d.container, d.finished_at.timestamp(), bare_id(d.container_id), 0, d.message)
        for d in observed.deaths.values()
        if d.reason == "OOMKilled"
    ]
    by_container: dict[tuple[str, str, str], list[Any]] = {}
    for worker in observed.worker_kills.values():
        by_container.setdefault((worker.pod, worker.container, worker.container_id), []).append(worker)
    for (pod, container, container_id), workers in by_container.items():
        for number, worker in enumerate(sorted(workers, key=lambda w: w.at), start=1):
            line = " ".join(f"{key}={value}" for key, value in worker.fields.items())
            kills.append(Kill(WORKER, pod, container, worker.at.timestamp(), bare_id(container_id), number, line))
    return sorted(kills, key=lambda kill: kill.at)


@dataclass
class Coverage:
    kill: Kill
    seen: dict[str, str] = field(default_factory=dict)  # detector -> YES, NO or UNREAD

    def monitoring_saw(self) -> bool:
        return any(value == YES for name, value in self.seen.items() if name not in OWN)


def expected_kinds(detector: str, alerts_expected: dict[str, bool]) -> set[str]:
    """The kinds of kill a detector is made to see (the empty set: none; it is reported, not judged)."""
    if detector in ("pod_status", "kube_state_metrics"):
        return {CONTAINER, AT_START}
    if detector == "cadvisor":
        return {WORKER}
    if detector == "hog_line":
        return {CONTAINER, WORKER}
    name = detector.partition(" ")[2]
    if alerts_expected.get(name):
        return {CONTAINER, AT_START} if alert_catalogue.by_name(name).ends_container else {WORKER}
    return set()


Samples = Callable[[str, float, float], list[tuple[dict[str, str], list[tuple[float, float]]]]]


def _selector(name: str, namespace: str, kill: Kill, **more: str) -> str:
    matchers = {"namespace": namespace, "pod": kill.pod, "container": kill.container, **more}
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in matchers.items()) + "}"


def read(
    kills: list[Kill],
    namespace: str,
    until: float,
    *,
    events: list[Any] | None,
    samples: Samples | None,
    alerts: tuple[str, ...],
    delivery: Delivery | None,
) -> list[Coverage]:
    """Each kill's coverage, from the namespace's events, Prometheus' samples up to `until` (None: no Prometheus)
    and what Alertmanager held (None: no Alertmanager)."""
    found = []
    for kill in kills:
        coverage = Coverage(kill)
        seen = coverage.seen
        seen["pod_status"] = NO if kill.kind == WORKER else YES
        seen["kubelet_event"] = UNREAD if events is None else YES if _oom_event(events, kill) else NO
        if samples is None:
            seen["kube_state_metrics"] = seen["cadvisor"] = UNREAD
        else:
            seen["kube_state_metrics"] = YES if _ksm_saw(samples, namespace, kill, until) else NO
            seen["cadvisor"] = YES if _cadvisor_saw(samples, namespace, kill, until) else NO
        for alert in alerts:
            if samples is None:
                seen[f"alert {alert}"] = UNREAD
            else:
                selector = _selector("ALERTS", namespace, kill, alertname=alert, alertstate="firing")
                seen[f"alert {alert}"] = YES if any(points for _, points in samples(selector, kill.at, until)) else NO
        for alert in alerts:
            held = delivery is not None and delivery.held_since(alert, kill.pod, kill.container, kill.at)
            seen[f"delivered {alert}"] = UNREAD if delivery is None else (YES if held else NO)
        logged = verdict.stepped(kill.hog_line) or kill.kind == WORKER
        seen["hog_line"] = YES if logged else NO
        found.append(coverage)
    return found


def _oom_event(events: list[Any], kill: Kill) -> bool:
    for event in events:
        involved = event.involved_object
        if involved is None or involved.name != kill.pod:
            continue
        text = f"{event.reason or ''} {event.message or ''}"
        last = event.last_timestamp or event.event_time
        # OOMKilling (node-problem-detector), SystemOOM: the word in capitals, never a name such as oom-killer
        if "OOM" in text and (last is None or last.timestamp() >= kill.at - 1):
            return True
    return False


def _ksm_saw(samples: Samples, namespace: str, kill: Kill, until: float) -> bool:
    if kill.kind == WORKER:
        return False  # a worker's kill changes nothing kube-state-metrics reads
    selector = _selector("kube_pod_container_status_last_terminated_timestamp", namespace, kill)
    return any(int(value) == int(kill.at) for _, points in samples(selector, kill.at, until) for _, value in points)


def _cadvisor_saw(samples: Samples, namespace: str, kill: Kill, until: float) -> bool:
    selector = _selector("container_oom_events_total", namespace, kill)
    counted = [
        value
        for labels, points in samples(selector, kill.at - 3600, until)
        if kill.container_id and kill.container_id in labels.get("id", "") + labels.get("name", "")
        for _, value in points
    ]
    return bool(counted) and max(counted) >= max(kill.number, 1)


def collect(
    kills: list[Kill],
    namespace: str,
    *,
    events: Callable[[], list[Any] | None],
    samples: Samples | None,
    alerts: tuple[str, ...],
    alerts_expected: dict[str, bool],
    delivery: Delivery | None,
    poll_alertmanager: Callable[[float], None],
    grace: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[Coverage]:
    """Read each kill's coverage until every signal made for a kill's kind has seen it, or `grace` seconds pass: a
    kill just before the watch ended may not be scraped yet (a scrape interval, cAdvisor's housekeeping,
    Alertmanager's group_wait). Without Prometheus and Alertmanager there is nothing to wait for: one reading."""
    deadline = clock() + grace
    while True:
        now = clock()
        if delivery is not None:
            poll_alertmanager(now)
        found = read(kills, namespace, now, events=events(), samples=samples, alerts=alerts, delivery=delivery)
        nothing_to_wait_for = samples is None and delivery is None
        if nothing_to_wait_for or now >= deadline or all(_complete(c, alerts_expected) for c in found):
            return found
        sleep(3.0)


def _complete(coverage: Coverage, alerts_expected: dict[str, bool]) -> bool:
    """Every signal that can still change (not the pod's status or the hog's line, fixed once the kill was seen) and
    is made for the kill's kind shows it."""
    return all(
        value == YES
        for name, value in coverage.seen.items()
        if value != UNREAD and name not in OWN and coverage.kill.kind in expected_kinds(name, alerts_expected)
    )
