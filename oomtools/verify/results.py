"""What a watch gathered, kept apart from what is judged of it: `--save FILE` writes it, `--from FILE` reads it back
and the same detectors, judge and report run on it, with no cluster (as a conformance tool keeps gathering apart from
judging).

Gathered is what observe made and what the detectors read: the stack's outputs, workload settings and nodes; the
records of the watch (pods, deaths, back-offs, worker kills, each container's log); the namespace's events,
Prometheus' samples as they were answered, what Alertmanager held, each alert's firing and resolution; and the
lines the watch said. No check, status or verdict is saved: a changed record is judged as it now reads.

The file is JSON: `schema` names it, `version` is the layout's (VERSION; a file of a newer one is refused, naming
both). Times are POSIX seconds, or RFC 3339 where the API gave them so.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from oomtools.verify.arguments import BadArguments
from oomtools.verify.observe import (
    AlertState,
    BackOff,
    ContainerLog,
    Death,
    Delivery,
    Event,
    InvolvedObject,
    KubeEvent,
    Observed,
    WorkerKill,
    hog_start,
)
from oomtools.verify.prediction import Prediction, predict

if TYPE_CHECKING:
    from oomtools import alert_client as prom

SCHEMA: Final = "oom-killer/verify-results"
VERSION: Final = 1

Series = list[tuple[dict[str, str], list[tuple[float, float]]]]
Samples = Callable[[str, float, float], Series]
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class SampleStore:
    """Prometheus' samples as they were answered: kept per metric and series, and answered again from what was kept
    for a selector (its `name{label="value",...}` matchers) and a window, as Prometheus answered it."""

    def __init__(self) -> None:
        self.series: dict[str, dict[tuple[tuple[str, str], ...], dict[float, float]]] = {}

    def keep(self, selector: str, found: Series) -> None:
        metric = selector.partition("{")[0]
        kept = self.series.setdefault(metric, {})
        for labels, points in found:
            kept.setdefault(tuple(sorted(labels.items())), {}).update(points)

    def recording(self, samples: Samples) -> Samples:
        """`samples`, each answer kept here as it passes."""

        def answer(selector: str, since: float, until: float) -> Series:
            found = samples(selector, since, until)
            self.keep(selector, found)
            return found

        return answer

    def __call__(self, selector: str, since: float, until: float) -> Series:
        metric, _, rest = selector.partition("{")
        matchers = dict(_MATCHER.findall(rest))
        found = []
        for key, points in self.series.get(metric, {}).items():
            labels = dict(key)
            if all(labels.get(name, "") == value for name, value in matchers.items()):
                window = sorted((t, v) for t, v in points.items() if since <= t <= until)
                if window:
                    found.append((labels, window))
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            metric: [{"labels": dict(key), "points": sorted(points.items())} for key, points in sorted(kept.items())]
            for metric, kept in sorted(self.series.items())
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SampleStore:
        store = cls()
        for metric, series in data.items():
            for one in series:
                store.keep(metric, [(dict(one["labels"]), [(float(t), float(v)) for t, v in one["points"]])])
        return store


@dataclass
class Gathered:
    """Everything one watch gathered: what it was told, what it saw, and what the detectors read."""

    outputs: dict[str, Any]  # the stack's, as `pulumi stack output --json` printed them
    kind: str  # Deployment or DaemonSet
    namespace: str
    selector: str
    env: dict[str, str]  # the workload container's environment: the settings the prediction reads
    replicas: int
    wanted_kills: int  # --kills
    alert_names: tuple[str, ...]  # the alerts read
    prometheus: str | None
    alertmanager: str | None
    started: float
    seconds: float  # from the watch's start to the detectors' last reading
    coverage_until: float  # when the detectors last read
    observed: Observed
    alerts: list[prom.AlertRecord]
    delivery: Delivery | None
    kube_events: list[KubeEvent] | None  # None: the namespace's events could not be listed
    samples: SampleStore | None  # None: no Prometheus
    # The nodes as the API's JSON: the cluster's (scope=node), or those the pods ran on (where readable).
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pod_spec: dict[str, Any] | None = None  # a DaemonSet's pod template (scope=node); None for a Deployment
    starts: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> its hog's start line (scope=node)
    seen: list[Event | AlertState] = field(default_factory=list)  # each thing the watch said, in order

    @property
    def prediction(self) -> Prediction:
        return predict(self.outputs, self.replicas, self.env)


def _when(stamp: datetime.datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()


def _time(text: str | None) -> datetime.datetime | None:
    return None if text is None else datetime.datetime.fromisoformat(text)


def _observed_json(observed: Observed) -> dict[str, Any]:
    return {
        "pods_seen": sorted(observed.pods_seen),
        "pod_nodes": dict(sorted(observed.pod_nodes.items())),
        "unscheduled": dict(sorted(observed.unscheduled.items())),
        "running": sorted([pod, container] for pod, container in observed.running),
        "restarts": [[pod, container, n] for (pod, container), n in sorted(observed.restarts.items())],
        "first_runs": sorted(observed.first_runs),
        "gone": observed.gone,
        "gone_at": observed.gone_at,
        "deaths": [
            {**asdict(d), "started_at": _when(d.started_at), "finished_at": _when(d.finished_at)}
            for d in observed.deaths.values()
        ],
        "back_offs": [{"after": key, **asdict(b)} for key, b in observed.back_offs.items()],
        "worker_kills": [
            {"stamp": stamp, **asdict(w), "at": _when(w.at)} for (_, _, stamp), w in observed.worker_kills.items()
        ],
        "logs": [asdict(log) for log in observed.logs.values()],
        "starts": dict(sorted(observed.starts.items())),
    }


def _observed(data: dict[str, Any]) -> Observed:
    observed = Observed(
        pods_seen=set(data["pods_seen"]),
        pod_nodes=dict(data["pod_nodes"]),
        unscheduled=dict(data["unscheduled"]),
        running={(pod, container) for pod, container in data["running"]},
        restarts={(pod, container): int(n) for pod, container, n in data["restarts"]},
        first_runs=set(data["first_runs"]),
        gone=bool(data["gone"]),
        gone_at=data["gone_at"],
    )
    for d in data["deaths"]:
        death = Death(**{**d, "started_at": _time(d["started_at"]), "finished_at": _time(d["finished_at"])})
        observed.deaths[death.container_id] = death
    for b in data["back_offs"]:
        observed.back_offs[b["after"]] = BackOff(b["pod"], b["container"], float(b["seconds"]), int(b["restart_count"]))
    for w in data["worker_kills"]:
        kill = WorkerKill(w["pod"], w["container"], _time(w["at"]), dict(w["fields"]), w["container_id"])  # type: ignore[arg-type]
        observed.worker_kills[(kill.pod, kill.container, w["stamp"])] = kill
    for log in data["logs"]:
        lines = [(str(stamp), str(text)) for stamp, text in log["lines"]]
        kept = ContainerLog(log["pod"], log["container"], log["container_id"], lines, bool(log["ended"]))
        observed.logs[kept.container_id] = kept
    if "starts" in data:
        observed.starts = {pod: dict(start) for pod, start in data["starts"].items()}
    else:  # saved before the start lines were kept: each pod's, from its earliest log kept (--save keeps them)
        for log in sorted(observed.logs.values(), key=lambda log: log.lines[0][0] if log.lines else ""):
            start = hog_start(text for _, text in log.lines)
            if start is not None:
                observed.starts.setdefault(log.pod, start)
    return observed


def _event_json(event: KubeEvent) -> dict[str, Any]:
    involved = event.involved_object
    return {
        "involved_object": None if involved is None else asdict(involved),
        "reason": event.reason,
        "message": event.message,
        "last_timestamp": _when(event.last_timestamp),
        "event_time": _when(event.event_time),
    }


def _event(data: dict[str, Any]) -> KubeEvent:
    involved = data["involved_object"]
    return KubeEvent(
        None if involved is None else InvolvedObject(**involved),
        data["reason"],
        data["message"],
        _time(data["last_timestamp"]),
        _time(data["event_time"]),
    )


def _seen_json(seen: Event | AlertState) -> dict[str, Any]:
    if isinstance(seen, AlertState):
        return {"alert": asdict(seen)}
    return {"event": seen.name, "fields": seen.fields}


def _seen(data: dict[str, Any]) -> Event | AlertState:
    if "alert" in data:
        return AlertState(**data["alert"])
    return Event(data["event"], dict(data["fields"]))


def to_json(gathered: Gathered) -> dict[str, Any]:
    delivery = gathered.delivery
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "stack": {
            "outputs": gathered.outputs,
            "kind": gathered.kind,
            "namespace": gathered.namespace,
            "selector": gathered.selector,
            "env": gathered.env,
            "replicas": gathered.replicas,
            "pod_spec": gathered.pod_spec,
        },
        "asked": {
            "kills": gathered.wanted_kills,
            "alerts": list(gathered.alert_names),
            "prometheus": gathered.prometheus,
            "alertmanager": gathered.alertmanager,
        },
        "window": {"started": gathered.started, "seconds": gathered.seconds, "coverage_until": gathered.coverage_until},
        "observed": _observed_json(gathered.observed),
        "alerts": [
            {"name": r.name, "expected": r.expected, "fired_at": r.fired_at, "resolved_at": r.resolved_at}
            for r in gathered.alerts
        ],
        "delivery": None
        if delivery is None
        else [
            {"alert": alert, "pod": pod, "container": container, "at": times}
            for (alert, pod, container), times in delivery.active.items()
        ],
        "kube_events": None if gathered.kube_events is None else [_event_json(e) for e in gathered.kube_events],
        "samples": None if gathered.samples is None else gathered.samples.to_json(),
        "nodes": gathered.nodes,
        "hog_starts": gathered.starts,
        "seen": [_seen_json(seen) for seen in gathered.seen],
    }


def from_json(data: dict[str, Any]) -> Gathered:
    from oomtools import alert_client as prom

    stack, asked, window = data["stack"], data["asked"], data["window"]
    delivery = None
    if data["delivery"] is not None:
        held = data["delivery"]
        delivery = Delivery({(d["alert"], d["pod"], d["container"]): [float(t) for t in d["at"]] for d in held})
    return Gathered(
        outputs=dict(stack["outputs"]),
        kind=stack["kind"],
        namespace=stack["namespace"],
        selector=stack["selector"],
        env=dict(stack["env"]),
        replicas=int(stack["replicas"]),
        wanted_kills=int(asked["kills"]),
        alert_names=tuple(asked["alerts"]),
        prometheus=asked["prometheus"],
        alertmanager=asked["alertmanager"],
        started=float(window["started"]),
        seconds=float(window["seconds"]),
        coverage_until=float(window["coverage_until"]),
        observed=_observed(data["observed"]),
        alerts=[prom.AlertRecord(a["name"], a["expected"], a["fired_at"], a["resolved_at"]) for a in data["alerts"]],
        delivery=delivery,
        kube_events=None if data["kube_events"] is None else [_event(e) for e in data["kube_events"]],
        samples=None if data["samples"] is None else SampleStore.from_json(data["samples"]),
        nodes=list(data["nodes"]),
        pod_spec=stack["pod_spec"],
        starts={node: dict(start) for node, start in data["hog_starts"].items()},
        seen=[_seen(seen) for seen in data["seen"]],
    )


def save(path: Path, gathered: Gathered) -> None:
    """Write what was gathered (indented, keys in a fixed order: a diff of two runs reads)."""
    path.write_text(json.dumps(to_json(gathered), indent=1) + "\n")


def load(path: Path) -> Gathered:
    """Read saved results back; BadArguments (exit 2) in one line where the file is not verify's, or of a newer
    layout than this verify reads."""
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise BadArguments(f"--from {path}: {error.strerror}") from error
    except ValueError as error:
        raise BadArguments(f"--from {path}: not JSON ({error})") from error
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BadArguments(f"--from {path}: not results saved by oom-killer verify --save (schema {SCHEMA})")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise BadArguments(f"--from {path}: results of layout version {version}; this verify reads 1 to {VERSION}")
    try:
        return from_json(data)
    except (KeyError, TypeError, ValueError) as error:
        raise BadArguments(f"--from {path}: saved results with a missing or bad field ({error!r})") from error
