"""What verify reads, and only reads: the stack's outputs, its workload and pods through the Kubernetes API, each
pod's hog's start line and a supervised one's worker kills in the pods' logs, the namespace's events, and the alerts in
Prometheus and Alertmanager, polled until the evidence is in or the time is up.

Each thing seen is kept (`Observed`) and handed on as an `Event` as it happens; report.py writes every line of them.
This module imports nothing of verify's later stages (detectors, judge, report): they import it.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from oomtools.errors import root_cause
from oomtools.kube_context import ContextProblem, chosen_context
from oomtools.verify.arguments import BadArguments, Unreachable
from oomtools.verify.prediction import NO_OOM_GROUP
from workload import logfmt

if TYPE_CHECKING:  # imported where used: --help, bad arguments and completion need neither Prometheus nor a cluster
    from oomtools import alert_client as prom
    from oomtools.verify.prediction import Prediction

POLL_SECONDS: Final = 1.0
WORKLOAD_KINDS: Final = ("Deployment", "DaemonSet")
STOPPED_LABEL: Final = "oom-killer.io/stopped"  # infra.kube.STOPPED_NODE_SELECTOR (not imported: it brings Pulumi)
PROGRESS_SECONDS: Final = 15.0
RETRY_SECONDS: Final = 2.0  # between two tries of an API server that does not answer
T = TypeVar("T")


def stack_outputs(stack: str, outputs: str | None) -> dict[str, Any]:
    """The stack's outputs, as `pulumi stack output --json` prints them: from --outputs (a file, or the JSON itself
    where it starts with `{`), else from the Pulumi CLI."""
    if outputs is not None and outputs.lstrip().startswith("{"):
        text, source = outputs, "--outputs"
    elif outputs is not None:
        try:
            text, source = Path(outputs).read_text(), f"--outputs {outputs}"
        except OSError as error:
            raise BadArguments(f"--outputs {outputs}: {error.strerror} (a file, or the JSON itself)") from error
    else:
        try:
            done = subprocess.run(
                ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except FileNotFoundError as error:
            raise BadArguments(
                "no pulumi CLI on PATH to read the stack's outputs (or give --outputs FILE or --outputs '{...}')"
            ) from error
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise BadArguments(f"pulumi stack output --stack {stack} failed: {last}")
        text, source = done.stdout, f"pulumi stack output --stack {stack}"
    try:
        found = json.loads(text)
    except ValueError as error:
        raise BadArguments(f"the stack's outputs ({source}) are not JSON: {error}") from error
    if isinstance(found, dict) and not found.get("workloadName") and found.get("deploymentName"):
        found = {**found, "workloadKind": "Deployment", "workloadName": found["deploymentName"]}  # an older stack's
    if isinstance(found, dict) and not found:
        # A stack whose first pulumi up was stopped before it ended (a Ctrl-C, a killed CLI, a cluster that did not
        # answer) has no outputs, even where some of its objects were made (make e2e, test_faults.py). A later
        # update that fails keeps the last finished update's outputs.
        if source.startswith("--outputs"):
            raise BadArguments(
                f"{source}: no outputs in it; give what `pulumi stack output --json` prints for a deployed stack "
                "(namespace, workloadName)"
            )
        raise BadArguments(
            f"stack {stack} has no outputs: it was never deployed, or its first pulumi up did not finish; "
            "run make up (pulumi up)"
        )
    if not isinstance(found, dict) or not found.get("namespace") or not found.get("workloadName"):
        raise BadArguments(f"stack {stack} has no namespace and workloadName outputs: is it deployed (make up)?")
    if found.get("workloadKind", "Deployment") not in WORKLOAD_KINDS:
        raise BadArguments(
            f"stack {stack}'s workloadKind {found['workloadKind']!r}: not one of {', '.join(WORKLOAD_KINDS)}"
        )
    return found


# ---------------------------------------------------------------------------------------------------------------
# The cluster


def kube_api(kubeconfig: str | None, context: str | None) -> Any:
    """The core and apps APIs of the chosen context. A kubeconfig that is not there or a context it lacks is the
    user's mistake (BadArguments, exit 2), not a cluster that does not answer (exit 3)."""
    from kubernetes import client, config  # imported here: `--help` and bad arguments need no client
    from kubernetes.config.config_exception import ConfigException

    try:
        chosen = chosen_context(kubeconfig, context)
    except ContextProblem as problem:
        raise BadArguments(str(problem)) from problem
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=chosen)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError) as error:
        raise BadArguments(f"context {chosen}: unusable ({' '.join(str(error).split())})") from error
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


class NoAnswer(Unreachable):
    """The API server did not answer at all (refused, timed out, no route): worth asking again."""


def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An API call; a connection failure is NoAnswer (one line: the server and what the socket said), an API error
    is raised as it is."""
    import urllib3

    try:
        return function(*args, _request_timeout=10, **kwargs)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        api = getattr(getattr(function, "__self__", None), "api_client", None)
        server = f" at {api.configuration.host}" if api is not None else ""
        raise NoAnswer(f"the cluster{server} does not answer: {root_cause(error)}") from error


def until_answers(
    read: Callable[[], T],
    timeout: float,
    note: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`read()`, asked again every RETRY_SECONDS while the API server does not answer, until `timeout` (verify's
    --timeout) has passed: a cluster still coming up, or a tunnel being reopened, is waited for. The first miss is
    said once; the last is raised."""
    deadline = clock() + timeout
    said = False
    while True:
        try:
            return read()
        except NoAnswer as error:
            if clock() + RETRY_SECONDS > deadline:
                raise
            if not said:
                note(f"verify: {error}; asking again every {RETRY_SECONDS:g} s until --timeout")
                said = True
            sleep(RETRY_SECONDS)


def _not_found(error: Exception) -> bool:
    return getattr(error, "status", None) == 404


def read_workload(apps: Any, kind: str, namespace: str, name: str) -> Any:
    """The stack's Deployment or DaemonSet (scope=node), or None where there is none."""
    if kind == "DaemonSet":
        from kubernetes.client.exceptions import ApiException

        try:
            return call(apps.read_namespaced_daemon_set, name, namespace)
        except ApiException as error:
            if _not_found(error):
                return None
            raise Unreachable(f"reading daemonset {namespace}/{name}: {error.status} {error.reason}") from error
    return read_deployment(apps, namespace, name)


def replicas_of(workload: Any, kind: str) -> int:
    """A Deployment's replicas; a DaemonSet's pods per node: 0 where the stack stopped it (replicas=0)."""
    if kind == "DaemonSet":
        selector = workload.spec.template.spec.node_selector or {}
        return 0 if selector.get(STOPPED_LABEL) == "true" else 1
    return int(workload.spec.replicas or 0)


def list_nodes(core: Any) -> list[dict[str, Any]]:
    """The cluster's nodes as the API's JSON (scope=node judges each)."""
    from kubernetes.client.exceptions import ApiException

    try:
        nodes = call(core.list_node).items
    except ApiException as error:
        raise Unreachable(f"listing nodes: {error.status} {error.reason} (scope=node needs to read nodes)") from error
    return [core.api_client.sanitize_for_serialization(node) for node in nodes]


def hog_start(texts: Iterable[str]) -> dict[str, str] | None:
    """The hog's start as a container's log says it (its lines' texts, without the kubelet's stamps): its first
    `event=start` line, over a supervisor's `event=supervisor_start` where one came before it (which alone says
    memory.oom.group before the worker's first line); None where neither is there."""
    found: dict[str, str] | None = None
    for text in texts:
        if text.startswith("event=start "):
            return {**(found or {}), **logfmt.parse(text)}
        if found is None and text.startswith("event=supervisor_start "):
            found = logfmt.parse(text)
    return found


def record_start(observed: Observed, pod: str, log: str) -> bool:
    """Keep the pod's hog's start line from a container's log (read with the kubelet's stamps): the first read, or
    a fuller one where only the supervisor's was read before. True where the pod had none before."""
    start = hog_start(line.partition(" ")[2] for line in log.splitlines())
    kept = observed.starts.get(pod)
    if start is None or (kept is not None and kept.get("event") == "start"):
        return False
    observed.starts[pod] = start
    return kept is None


def hog_starts(core: Any, namespace: str, observed: Observed) -> dict[str, dict[str, str]]:
    """For each node, the start line of a hog that ran there (what it found: cgroup, oom_group, memory.high, swap):
    the one the watch kept, else from its current log or, for a container that died, the previous one (kept too)."""
    from kubernetes.client.exceptions import ApiException

    starts: dict[str, dict[str, str]] = {}
    for pod, node in sorted(observed.pod_nodes.items()):
        if node in starts or pod in observed.unscheduled:
            continue
        for previous in (False, True):
            if pod in observed.starts:
                break
            try:
                log = call(core.read_namespaced_pod_log, pod, namespace, previous=previous, tail_lines=200)
            except ApiException:
                continue
            start = hog_start(log.splitlines())
            if start is not None:
                observed.starts[pod] = start
        if pod in observed.starts:
            starts[node] = observed.starts[pod]
    return starts


def read_deployment(apps: Any, namespace: str, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return call(apps.read_namespaced_deployment, name, namespace)
    except ApiException as error:
        if _not_found(error):
            return None
        raise Unreachable(f"reading deployment {namespace}/{name}: {error.status} {error.reason}") from error


# ---------------------------------------------------------------------------------------------------------------
# What was seen


@dataclass(frozen=True)
class Event:
    """One thing the watch saw, when it saw it: `name` is the line's `event=`, `fields` the rest, in order. report.py
    writes it (progress, `waiting`, on stderr; the rest on stdout)."""

    name: str
    fields: dict[str, object]


@dataclass(frozen=True)
class AlertState:
    """One alert as verify saw it at a moment: whether and when it fired and resolved, beside the first kill and the
    stack's going."""

    name: str
    expected: bool
    fired_at: float | None
    resolved_at: float | None
    first_kill_at: float | None
    gone: bool
    gone_at: float | None

    @classmethod
    def of(cls, record: prom.AlertRecord, observed: Observed) -> AlertState:
        return cls(
            record.name,
            record.expected,
            record.fired_at,
            record.resolved_at,
            observed.first_kill_at(),
            observed.gone,
            observed.gone_at,
        )

    @property
    def latency(self) -> float | None:
        """Seconds from the first kill to verify seeing the alert fire (within verify's poll interval)."""
        if self.fired_at is None or self.first_kill_at is None:
            return None
        return self.fired_at - self.first_kill_at


Seen = Callable[[Event | AlertState], None]


@dataclass
class Death:
    pod: str
    container: str
    container_id: str
    reason: str
    exit_code: int
    message: str
    started_at: datetime.datetime
    finished_at: datetime.datetime
    restart_count: int  # the container's restart count when this death was seen
    # The pod's first run of the container: seen running with restart count 0, or dead before any restart. Nothing
    # of a killed run filled the pod before it (a tmpfs restart's is killed at start; the first run is not).
    first_run: bool = False

    @property
    def seconds_from_start(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class BackOff:
    pod: str
    container: str
    seconds: float  # from a death to the next container's start
    restart_count: int


@dataclass
class WorkerKill:
    pod: str
    container: str
    at: datetime.datetime
    fields: dict[str, str]
    container_id: str = ""  # the container the worker ran in (the runtime's ID, as the pod's status gives it)


@dataclass
class ContainerLog:
    """One container's log as the kubelet kept it: each line with the kubelet's stamp (RFC 3339), oldest first. Read
    while it ran and once more after it ended (`ended`): the hog's start and step lines, what the report draws."""

    pod: str
    container: str
    container_id: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False


@dataclass
class Observed:
    deaths: dict[str, Death] = field(default_factory=dict)  # by container ID
    back_offs: dict[str, BackOff] = field(default_factory=dict)  # by the ID of the death it followed
    worker_kills: dict[tuple[str, str, str], WorkerKill] = field(default_factory=dict)
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    running: set[tuple[str, str]] = field(default_factory=set)
    pods_seen: set[str] = field(default_factory=set)
    pod_nodes: dict[str, str] = field(default_factory=dict)  # pod -> the node it is bound (or, pending, meant) to
    unscheduled: dict[str, str] = field(default_factory=dict)  # pending pod -> the scheduler's reason
    gone: bool = False  # the stack was scaled to 0 or its namespace deleted during the run
    gone_at: float | None = None
    first_runs: set[str] = field(default_factory=set)  # the IDs of containers seen running as their pod's first
    logs: dict[str, ContainerLog] = field(default_factory=dict)  # by container ID: read for --report and --save only
    # pod -> its hog's start line (hog_start): read while a stack that kills or a supervised one is watched, and for
    # scope=node's facts
    starts: dict[str, dict[str, str]] = field(default_factory=dict)

    def hog_started(self, pod: str) -> bool:
        """The pod's hog's own start line was read (`event=start`: its limit, swap, the steps it announced), not
        only a supervisor's (which says memory.oom.group alone)."""
        return self.starts.get(pod, {}).get("event") == "start"

    def first_kill_at(self) -> float | None:
        times = [d.finished_at.timestamp() for d in self.deaths.values() if d.reason == "OOMKilled"]
        times += [k.at.timestamp() for k in self.worker_kills.values()]
        return min(times) if times else None

    def in_pods(self, pods: set[str]) -> Observed:
        """The part of what was observed that happened in these pods (one node's)."""
        return Observed(
            deaths={key: d for key, d in self.deaths.items() if d.pod in pods},
            back_offs={key: b for key, b in self.back_offs.items() if b.pod in pods},
            worker_kills={key: w for key, w in self.worker_kills.items() if w.pod in pods},
            restarts={key: n for key, n in self.restarts.items() if key[0] in pods},
            running={key for key in self.running if key[0] in pods},
            pods_seen=self.pods_seen & pods,
            gone=self.gone,
            gone_at=self.gone_at,
            first_runs=set(self.first_runs),
            starts={pod: start for pod, start in self.starts.items() if pod in pods},
        )


@dataclass
class Delivery:
    """What verify saw in Alertmanager while it watched: for each (alert, pod, container), when it was active there
    with at least one receiver."""

    active: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def record(self, routed: Iterable[prom.Routed], now: float) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """Take in one reading; return each (alert, pod, container, receivers) held active for the first time."""
        new = []
        for alert in routed:
            if alert.state != "active" or not alert.receivers:
                continue
            key = (alert.labels.get("alertname", ""), alert.labels.get("pod", ""), alert.labels.get("container", ""))
            if key not in self.active:
                new.append((*key, alert.receivers))
            self.active.setdefault(key, []).append(now)
        return new

    def holds(self, alert: str) -> bool:
        """Alertmanager held the alert, for some pod, for its receivers."""
        return any(name == alert for name, _, _ in self.active)

    def held_since(self, alert: str, pod: str, container: str, since: float) -> bool:
        """Alertmanager held the alert for that pod and container at `since` or after."""
        return any(at >= since for at in self.active.get((alert, pod, container), []))


def _terminated(pod: str, container: str, state: Any, restart_count: int, first_run: bool) -> Death | None:
    if state is None or state.terminated is None or not state.terminated.container_id:
        return None
    t = state.terminated
    return Death(
        pod,
        container,
        t.container_id,
        t.reason or "?",
        int(t.exit_code),
        (t.message or "").strip(),
        t.started_at,
        t.finished_at,
        restart_count,
        first_run,
    )


def record_pods(observed: Observed, pods: list[Any], seen: Seen) -> None:
    """Take in one listing of the stack's pods: new deaths, the back-off that ended in a start, restart counts."""
    observed.running = set()
    for pod in pods:
        name = pod.metadata.name
        observed.pods_seen.add(name)
        node = pod.spec.node_name or _meant_for(pod)
        if node:
            observed.pod_nodes[name] = node
        waiting = [c for c in pod.status.conditions or [] if c.type == "PodScheduled" and c.status == "False"]
        if waiting and not pod.spec.node_name:
            observed.unscheduled[name] = waiting[0].message or waiting[0].reason or "unschedulable"
        else:
            observed.unscheduled.pop(name, None)
        for status in pod.status.container_statuses or []:
            key = (name, status.name)
            observed.restarts[key] = status.restart_count
            if status.state and status.state.running and status.restart_count == 0 and status.container_id:
                observed.first_runs.add(status.container_id)
            for state in (status.last_state, status.state):
                ended = state.terminated if state is not None else None
                first = ended is not None and (
                    ended.container_id in observed.first_runs or (state is status.state and status.restart_count == 0)
                )
                death = _terminated(name, status.name, state, status.restart_count, first)
                if death is not None and death.container_id not in observed.deaths:
                    observed.deaths[death.container_id] = death
                    seen(
                        Event(
                            "death",
                            {
                                "pod": name,
                                "container": status.name,
                                "reason": death.reason,
                                "exit_code": death.exit_code,
                                "seconds_from_start": round(death.seconds_from_start, 1),
                                "restart_count": status.restart_count,
                                "termination_message": death.message,
                            },
                        )
                    )
            started = status.state.running.started_at if status.state and status.state.running else None
            if started is not None:
                observed.running.add(key)
                _record_back_off(
                    observed, name, status.name, status.container_id or "", started, status.restart_count, seen
                )


def _meant_for(pod: Any) -> str | None:
    """The node a DaemonSet's pod is for before it is bound: the DaemonSet controller names it in a required node
    affinity on the field metadata.name."""
    affinity = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    for term in required.node_selector_terms if required else []:
        for field_match in term.match_fields or []:
            if field_match.key == "metadata.name" and field_match.values:
                return str(field_match.values[0])
    return None


def _record_back_off(
    observed: Observed,
    pod: str,
    container: str,
    running_id: str,
    started: datetime.datetime,
    restarts: int,
    seen: Seen,
) -> None:
    previous = [
        d
        for d in observed.deaths.values()
        if d.pod == pod and d.container == container and d.container_id != running_id and d.finished_at <= started
    ]
    if not previous:
        return
    last = max(previous, key=lambda d: d.finished_at)
    if last.container_id in observed.back_offs:
        return
    back_off = BackOff(pod, container, (started - last.finished_at).total_seconds(), restarts)
    observed.back_offs[last.container_id] = back_off
    seen(
        Event(
            "restart",
            {
                "pod": pod,
                "container": container,
                "back_off_seconds": round(back_off.seconds, 1),
                "restart_count": restarts,
            },
        )
    )


def record_worker_kills(
    observed: Observed, pod: str, container: str, log: str, seen: Seen, container_id: str = ""
) -> None:
    """The supervised workload's own `event=child_exit` lines (kubelet-timestamped) for workers the kernel killed."""
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        if "event=child_exit" not in text:
            continue
        fields = logfmt.parse(text)
        if fields.get("signal") != "SIGKILL":
            continue
        key = (pod, container, stamp)
        if key in observed.worker_kills:
            continue
        at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        observed.worker_kills[key] = WorkerKill(pod, container, at, fields, container_id)
        seen(
            Event(
                "worker_kill",
                {
                    "pod": pod,
                    "container": container,
                    "at": stamp,
                    "oom_kill": fields.get("oom_kill", "?"),
                    "container_survived": fields.get("container_survived"),
                },
            )
        )


def _read_start(observed: Observed, prediction: Prediction, pod: str, log: str, seen: Seen) -> None:
    """Keep the pod's hog's start line from a container's log, and say it (event=hog_start) where it is the first
    read or changes what the pod is predicted (a supervisor's line first, then its worker's, which says the swap)."""
    before = observed.starts.get(pod)
    record_start(observed, pod, log)
    start = observed.starts.get(pod)
    if start is None or start == before:
        return
    read = prediction.read_from(start)
    if before is not None and read == prediction.read_from(before):
        return
    fields: dict[str, object] = {"pod": pod}
    if prediction.supervised:
        fields.update(oom_group=start.get("oom_group", NO_OOM_GROUP), supervised_end=read.supervised_end)
    if read.swap_mib:
        # and what it moves: the steps and seconds the pod's kill is now held to (the stack's output says neither)
        fields["swap_mib"] = read.swap_mib
        if read.steps is not None:
            fields["predicted_steps"] = f"{read.steps.earliest}..{read.steps.latest}"
        if read.earliest is not None and read.latest is not None:
            fields["predicted_seconds"] = f"{read.earliest:g}..{read.latest:g}"
    seen(Event("hog_start", fields))


def _ends(observed: Observed, prediction: Prediction) -> set[str]:
    """What each pod's start line read so far predicts, a supervised stack's (`unread` for a pod whose line is
    awaited: the watch waits for it)."""
    return {str(prediction.read_from(observed.starts.get(pod)).supervised_end) for pod in observed.pods_seen}


def read_ended_starts(
    core: Any, namespace: str, observed: Observed, prediction: Prediction, pods: list[Any], seen: Seen
) -> None:
    """A pod's hog's start line where no running container's log gave it: the last ended container's (one the
    kernel killed between two polls, a single hog or a supervised one's worker and all)."""
    from kubernetes.client.exceptions import ApiException

    for pod in pods:
        name = pod.metadata.name
        for status in pod.status.container_statuses or []:
            ended = status.last_state.terminated if status.last_state is not None else None
            if observed.hog_started(name) or ended is None:
                continue
            try:
                log = call(
                    core.read_namespaced_pod_log, name, namespace, container=status.name, previous=True, timestamps=True
                )
            except ApiException:
                continue
            _read_start(observed, prediction, name, log, seen)


def keep_log(observed: Observed, pod: str, container: str, container_id: str, log: str, ended: bool) -> None:
    """Keep a container's log (read with the kubelet's stamps) where it holds at least the lines kept before."""
    lines = []
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        if stamp:
            lines.append((stamp, text))
    kept = observed.logs.get(container_id)
    if kept is None or len(lines) >= len(kept.lines):
        observed.logs[container_id] = ContainerLog(pod, container, container_id, lines, ended)


def read_ended_logs(core: Any, namespace: str, observed: Observed, pods: list[Any]) -> None:
    """Read, once, the log of each container that ended since the last listing: the current one's where the pod's
    status shows it ended, else the previous one's (the last that ended: the kubelet keeps one)."""
    from kubernetes.client.exceptions import ApiException

    for pod in pods:
        for status in pod.status.container_statuses or []:
            for state, previous in ((status.state, False), (status.last_state, True)):
                ended = state.terminated if state is not None else None
                if ended is None or not ended.container_id:
                    continue
                kept = observed.logs.get(ended.container_id)
                if kept is not None and kept.ended:
                    continue
                try:
                    log = call(
                        core.read_namespaced_pod_log,
                        pod.metadata.name,
                        namespace,
                        container=status.name,
                        previous=previous,
                        timestamps=True,
                    )
                except ApiException:
                    continue
                keep_log(observed, pod.metadata.name, status.name, ended.container_id, log, ended=True)


def read_nodes(core: Any, names: Iterable[str]) -> list[dict[str, Any]]:
    """The named nodes as the API's JSON (kernel, kubelet, runtime for the report): none where they cannot be read."""
    from kubernetes.client.exceptions import ApiException

    wanted = set(names)
    try:
        return [node for node in list_nodes(core) if node.get("metadata", {}).get("name") in wanted]
    except (Unreachable, ApiException):
        return []


@dataclass(frozen=True)
class InvolvedObject:
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True)
class KubeEvent:
    """One of the namespace's events, as much of it as the detectors read (the API object's own attribute names)."""

    involved_object: InvolvedObject | None
    reason: str
    message: str
    last_timestamp: datetime.datetime | None
    event_time: datetime.datetime | None


def kube_event(event: Any) -> KubeEvent:
    involved = event.involved_object
    about = None
    if involved is not None:
        about = InvolvedObject(involved.kind or "", involved.name or "", involved.namespace or "")
    return KubeEvent(
        about,
        event.reason or "",
        event.message or "",
        event.last_timestamp,
        event.event_time,
    )


def read_events(core: Any, namespace: str) -> list[KubeEvent] | None:
    """The namespace's events; None without the right to list them (the detector is then not read)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return [kube_event(event) for event in call(core.list_namespaced_event, namespace).items]
    except ApiException:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Prometheus and Alertmanager


def check_prometheus(url: str, access: prom.Access, names: tuple[str, ...]) -> tuple[str, list[str]]:
    """Which Prometheus answers (its version), and which of the alerts asked for it has no rule for."""
    from oomtools import alert_client as prom

    try:
        version = prom.check_reachable(url, access)
        loaded = prom.rule_names(url, access)
    except prom.PrometheusUnreachable as error:
        raise Unreachable(f"Prometheus does not answer: {error}") from error
    return version, [name for name in names if name not in loaded]


def read_samples(
    url: str, access: prom.Access
) -> Callable[[str, float, float], list[tuple[dict[str, str], list[tuple[float, float]]]]]:
    """Prometheus' samples of a selector over a window, as the detectors ask for them."""
    from oomtools import alert_client as prom

    def samples(selector: str, since: float, until: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        try:
            return prom.samples(url, selector, since, until, access)
        except prom.PrometheusUnreachable as error:
            raise Unreachable(f"Prometheus stopped answering: {error}") from error

    return samples


def poll_alertmanager(url: str, namespace: str, delivery: Delivery, now: float, seen: Seen) -> None:
    """Take in what Alertmanager holds for the namespace; each alert it holds for its receivers is seen the first
    time."""
    from oomtools import alert_client as prom

    try:
        held = prom.alertmanager_alerts(url, namespace)
    except prom.AlertmanagerUnreachable as error:
        raise Unreachable(f"Alertmanager stopped answering: {error}") from error
    for name, pod, container, receivers in delivery.record(held, now):
        seen(Event("delivered", {"name": name, "pod": pod, "container": container, "receivers": ",".join(receivers)}))


def check_alertmanager(url: str) -> str:
    """Which Alertmanager answers: its version."""
    from oomtools import alert_client as prom

    try:
        return prom.alertmanager_version(url)
    except prom.AlertmanagerUnreachable as error:
        raise Unreachable(f"Alertmanager does not answer: {error}") from error


# ---------------------------------------------------------------------------------------------------------------
# The watch


@dataclass(frozen=True)
class Target:
    """What is watched: the stack's workload, its pods' selector, and the cluster's API."""

    core: Any  # the Kubernetes client's CoreV1Api
    apps: Any  # its AppsV1Api
    namespace: str
    name: str
    kind: str  # Deployment or DaemonSet
    selector: str


@dataclass(frozen=True)
class WatchOptions:
    """How long to watch, and what else to read while watching."""

    timeout: float
    wait_resolved: bool = False  # after the alerts fired, wait for the stack to go and the alerts to resolve
    prometheus: str | None = None
    access: prom.Access | None = None
    alertmanager: str | None = None
    logs: bool = False  # keep every container's log (--report, --save): each poll reads the running ones' logs


def watch(
    target: Target,
    prediction: Prediction,
    records: list[prom.AlertRecord],
    options: WatchOptions,
    *,
    complete: Callable[[Observed], bool],
    seen: Seen,
    clock: Callable[[], float],
    started: float,
    delivery: Delivery | None = None,
    expect: Callable[[Observed], dict[str, bool]] | None = None,
) -> Observed:
    """Poll the stack's pods (and the supervised worker's logs), its workload and the alerts from `started` on, each
    thing seen handed to `seen` as it happens and progress every so often, until the evidence is `complete` (and
    the alerts resolved, where the stack went) or the timeout is up. `expect` gives, from what was seen so far (the
    start lines read), whether each alert of `records` is expected to fire (None: as the records were made)."""
    from kubernetes.client.exceptions import ApiException

    from oomtools import alert_client as prom

    core, namespace = target.core, target.namespace
    names = tuple(record.name for record in records)
    observed = Observed()
    last_progress = started
    last_prometheus = last_alertmanager = 0.0
    while True:
        now = clock()
        try:
            pods = call(core.list_namespaced_pod, namespace, label_selector=target.selector).items
        except ApiException as error:
            if not _not_found(error):
                raise Unreachable(f"listing pods: {error.status} {error.reason}") from error
            pods = []
        record_pods(observed, pods, seen)
        # Each pod's hog's start line, where what it says changes the judgement: a supervised hog's kill, and any
        # kill's steps and time (the swap it says its cgroup may use moves them). Read once a pod for a single hog.
        starts = prediction.supervised or prediction.kills
        for pod in pods:
            name = pod.metadata.name
            if not (prediction.supervised or options.logs or (starts and not observed.hog_started(name))):
                continue
            for status in pod.status.container_statuses or []:
                if status.state and status.state.running:
                    try:
                        log = call(
                            core.read_namespaced_pod_log, name, namespace, container=status.name, timestamps=True
                        )
                    except ApiException:
                        continue
                    if prediction.supervised:
                        record_worker_kills(observed, name, status.name, log, seen, status.container_id or "")
                    if starts:
                        _read_start(observed, prediction, name, log, seen)
                    if options.logs and status.container_id:
                        keep_log(observed, name, status.name, status.container_id, log, ended=False)
        if starts:
            read_ended_starts(core, namespace, observed, prediction, pods, seen)
        if options.logs:
            read_ended_logs(core, namespace, observed, pods)
        if expect is not None:
            expected = expect(observed)
            for record in records:
                record.expected = expected[record.name]
        if not observed.gone and prediction.replicas > 0:
            current = read_workload(target.apps, target.kind, namespace, target.name)
            if current is None or not replicas_of(current, target.kind):
                observed.gone, observed.gone_at = True, now
                how = "destroyed" if current is None else "scaled to 0"
                seen(Event("stack_gone", {"after_seconds": round(now - started, 1), "how": how}))
        if options.prometheus and now - last_prometheus >= 2 * POLL_SECONDS:
            last_prometheus = now
            try:
                active = prom.firing(options.prometheus, names, namespace, options.access or prom.Access())
            except prom.PrometheusUnreachable as error:
                raise Unreachable(f"Prometheus stopped answering: {error}") from error
            for record in records:
                was = record.fired_at, record.resolved_at
                record.observe(bool(active[record.name]), now)
                if (record.fired_at, record.resolved_at) != was:
                    seen(AlertState.of(record, observed))

        if delivery is not None and options.alertmanager and now - last_alertmanager >= 2 * POLL_SECONDS:
            last_alertmanager = now
            poll_alertmanager(options.alertmanager, namespace, delivery, now, seen)

        done = complete(observed)
        alerts_done = all(r.fired_at is not None for r in records if r.expected)
        if delivery is not None:  # and held by Alertmanager for its receivers
            alerts_done = alerts_done and all(delivery.holds(r.name) for r in records if r.expected)
        resolving = observed.gone or options.wait_resolved
        resolved = all(r.resolved_at is not None for r in records if r.fired_at is not None)
        if done and alerts_done and (not resolving or (observed.gone and resolved)):
            return observed
        if now - started >= options.timeout:
            seen(Event("timeout", {"after_seconds": round(now - started, 1)}))
            return observed
        if now - last_progress >= PROGRESS_SECONDS:
            last_progress = now
            firing = ",".join(r.name for r in records if r.fired_at is not None and r.resolved_at is None)
            seen(
                Event(
                    "waiting",
                    {
                        "seconds": round(now - started),
                        "timeout": round(options.timeout),
                        "deaths": len(observed.deaths),
                        "worker_kills": len(observed.worker_kills),
                        "restarts": sum(observed.restarts.values()),
                        "firing": firing or "none",
                        # supervised: what each pod's start line predicts, `unread` for a pod whose line is awaited
                        **(
                            {"supervised_end": ",".join(sorted(_ends(observed, prediction)))}
                            if prediction.supervised
                            else {}
                        ),
                    },
                )
            )
        time.sleep(POLL_SECONDS)
