"""What verify reads: the stack's outputs, its Deployment and pods through the Kubernetes API, the supervised
worker's kills in the pods' logs, and the alerts in Prometheus, polled until the evidence is in or the time is up."""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from oomtools.verify.arguments import BadArguments, Unreachable
from oomtools.verify.judge import _evidence_complete
from oomtools.verify.report import _alert_line
from workload import logfmt

if TYPE_CHECKING:  # imported where used: --help, bad arguments and completion need neither Prometheus nor a cluster
    from oomtools import alert_client as prom
    from oomtools.verify.detectors import Delivery
    from oomtools.verify.judge import Prediction

POLL_SECONDS: Final = 1.0
WORKLOAD_KINDS: Final = ("Deployment", "DaemonSet")
STOPPED_LABEL: Final = "oom-killer.io/stopped"  # infra.kube.STOPPED_NODE_SELECTOR (not imported: it brings Pulumi)
PROGRESS_SECONDS: Final = 15.0


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
    from kubernetes import client, config  # imported here: `--help` and bad arguments need no client
    from kubernetes.config.config_exception import ConfigException

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError) as error:
        raise Unreachable(f"no usable kube context ({error})") from error
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An API call; a connection failure is Unreachable, an API error is raised as it is."""
    import urllib3

    try:
        return function(*args, _request_timeout=10, **kwargs)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise Unreachable(f"the cluster does not answer ({error})") from error


def _not_found(error: Exception) -> bool:
    return getattr(error, "status", None) == 404


def read_workload(apps: Any, kind: str, namespace: str, name: str) -> Any:
    """The stack's Deployment or DaemonSet (scope=node), or None where there is none."""
    if kind == "DaemonSet":
        from kubernetes.client.exceptions import ApiException

        try:
            return _call(apps.read_namespaced_daemon_set, name, namespace)
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
        nodes = _call(core.list_node).items
    except ApiException as error:
        raise Unreachable(f"listing nodes: {error.status} {error.reason} (scope=node needs to read nodes)") from error
    return [core.api_client.sanitize_for_serialization(node) for node in nodes]


def hog_starts(core: Any, namespace: str, observed: Observed) -> dict[str, dict[str, str]]:
    """For each node, the start line of a hog that ran there (what it found: cgroup, oom_group, memory.high, swap),
    from its current log or, for a container that died, the previous one."""
    from kubernetes.client.exceptions import ApiException

    starts: dict[str, dict[str, str]] = {}
    for pod, node in sorted(observed.pod_nodes.items()):
        if node in starts or pod in observed.unscheduled:
            continue
        for previous in (False, True):
            try:
                log = _call(core.read_namespaced_pod_log, pod, namespace, previous=previous, tail_lines=200)
            except ApiException:
                continue
            start = next((logfmt.parse(line) for line in log.splitlines() if line.startswith("event=start ")), None)
            if start is not None:
                starts[node] = start
                break
    return starts


def read_deployment(apps: Any, namespace: str, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return _call(apps.read_namespaced_deployment, name, namespace)
    except ApiException as error:
        if _not_found(error):
            return None
        raise Unreachable(f"reading deployment {namespace}/{name}: {error.status} {error.reason}") from error


# ---------------------------------------------------------------------------------------------------------------
# What was seen


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

    def first_kill_at(self) -> float | None:
        times = [d.finished_at.timestamp() for d in self.deaths.values() if d.reason == "OOMKilled"]
        times += [k.at.timestamp() for k in self.worker_kills.values()]
        return min(times) if times else None


def _terminated(pod: str, container: str, state: Any, restart_count: int) -> Death | None:
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
    )


def record_pods(observed: Observed, pods: list[Any], say: Callable[[str], None]) -> None:
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
            for state in (status.last_state, status.state):
                death = _terminated(name, status.name, state, status.restart_count)
                if death is not None and death.container_id not in observed.deaths:
                    observed.deaths[death.container_id] = death
                    say(
                        logfmt.line(
                            event="death",
                            pod=name,
                            container=status.name,
                            reason=death.reason,
                            exit_code=death.exit_code,
                            seconds_from_start=round(death.seconds_from_start, 1),
                            restart_count=status.restart_count,
                            termination_message=death.message,
                        )
                    )
            started = status.state.running.started_at if status.state and status.state.running else None
            if started is not None:
                observed.running.add(key)
                _record_back_off(
                    observed, name, status.name, status.container_id or "", started, status.restart_count, say
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
    say: Callable[[str], None],
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
    say(
        logfmt.line(
            event="restart",
            pod=pod,
            container=container,
            back_off_seconds=round(back_off.seconds, 1),
            restart_count=restarts,
        )
    )


def record_worker_kills(
    observed: Observed, pod: str, container: str, log: str, say: Callable[[str], None], container_id: str = ""
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
        say(
            logfmt.line(
                event="worker_kill",
                pod=pod,
                container=container,
                at=stamp,
                oom_kill=fields.get("oom_kill", "?"),
                container_survived=fields.get("container_survived"),
            )
        )


# ---------------------------------------------------------------------------------------------------------------
# Prometheus, and the watch


def check_prometheus(url: str, access: prom.Access, names: tuple[str, ...], err: TextIO) -> None:
    """Say which Prometheus answers, and which of the alerts asked for it has no rule for."""
    from oomtools import alert_client as prom

    try:
        version = prom.check_reachable(url, access)
        loaded = prom.rule_names(url, access)
    except prom.PrometheusUnreachable as error:
        raise Unreachable(f"Prometheus does not answer: {error}") from error
    missing = [name for name in names if name not in loaded]
    print(f"verify: Prometheus {version} at {url}", file=err)
    if missing:
        print(
            f"verify: Prometheus has no rule {', '.join(missing)}: load alerts/oom-killer.rules.yaml "
            "(or prometheusRule=true)",
            file=err,
        )


def poll_alertmanager(url: str, namespace: str, delivery: Delivery, now: float, say: Callable[[str], None]) -> None:
    """Take in what Alertmanager holds for the namespace; say each alert it holds for its receivers the first time."""
    from oomtools import alert_client as prom

    try:
        held = prom.alertmanager_alerts(url, namespace)
    except prom.AlertmanagerUnreachable as error:
        raise Unreachable(f"Alertmanager stopped answering: {error}") from error
    for name, pod, container, receivers in delivery.record(held, now):
        say(logfmt.line(event="delivered", name=name, pod=pod, container=container, receivers=",".join(receivers)))


def check_alertmanager(url: str, err: TextIO) -> None:
    """Say which Alertmanager answers."""
    from oomtools import alert_client as prom

    try:
        version = prom.alertmanager_version(url)
    except prom.AlertmanagerUnreachable as error:
        raise Unreachable(f"Alertmanager does not answer: {error}") from error
    print(f"verify: Alertmanager {version} at {url}", file=err)


def watch(
    core: Any,
    apps: Any,
    namespace: str,
    workload_name: str,
    selector: str,
    prediction: Prediction,
    records: list[prom.AlertRecord],
    args: argparse.Namespace,
    access: prom.Access,
    *,
    say: Callable[[str], None],
    err: TextIO,
    clock: Callable[[], float],
    started: float,
    delivery: Delivery | None = None,
    kind: str = "Deployment",
    complete: Callable[[Observed], bool] | None = None,
) -> Observed:
    """Poll the stack's pods (and the supervised worker's logs), its Deployment and the alerts from `started` on, each
    thing seen said as it happens and progress on err, until the evidence is in (and the alerts resolved, where the
    stack went) or --timeout is up."""
    from kubernetes.client.exceptions import ApiException

    from oomtools import alert_client as prom

    names = tuple(record.name for record in records)
    observed = Observed()
    last_progress = started
    last_prometheus = last_alertmanager = 0.0
    while True:
        now = clock()
        try:
            pods = _call(core.list_namespaced_pod, namespace, label_selector=selector).items
        except ApiException as error:
            if not _not_found(error):
                raise Unreachable(f"listing pods: {error.status} {error.reason}") from error
            pods = []
        record_pods(observed, pods, say)
        if prediction.supervised:
            for pod in pods:
                for status in pod.status.container_statuses or []:
                    if status.state and status.state.running:
                        try:
                            log = _call(
                                core.read_namespaced_pod_log,
                                pod.metadata.name,
                                namespace,
                                container=status.name,
                                timestamps=True,
                            )
                        except ApiException:
                            continue
                        record_worker_kills(
                            observed, pod.metadata.name, status.name, log, say, status.container_id or ""
                        )
        if not observed.gone and prediction.replicas > 0:
            current = read_workload(apps, kind, namespace, workload_name)
            if current is None or not replicas_of(current, kind):
                observed.gone, observed.gone_at = True, now
                say(
                    logfmt.line(
                        event="stack_gone",
                        after_seconds=round(now - started, 1),
                        how="destroyed" if current is None else "scaled to 0",
                    )
                )
        if args.prometheus and now - last_prometheus >= 2 * POLL_SECONDS:
            last_prometheus = now
            try:
                active = prom.firing(args.prometheus, names, namespace, access)
            except prom.PrometheusUnreachable as error:
                raise Unreachable(f"Prometheus stopped answering: {error}") from error
            for record in records:
                was = record.fired_at, record.resolved_at
                record.observe(bool(active[record.name]), now)
                if (record.fired_at, record.resolved_at) != was:
                    say(_alert_line(record, observed))

        if delivery is not None and now - last_alertmanager >= 2 * POLL_SECONDS:
            last_alertmanager = now
            poll_alertmanager(args.alertmanager, namespace, delivery, now, say)

        done = complete(observed) if complete else _evidence_complete(prediction, observed, args.kills)
        alerts_done = all(r.fired_at is not None for r in records if r.expected)
        if delivery is not None:  # and held by Alertmanager for its receivers
            alerts_done = alerts_done and all(delivery.holds(r.name) for r in records if r.expected)
        resolving = observed.gone or args.wait_resolved
        resolved = all(r.resolved_at is not None for r in records if r.fired_at is not None)
        if done and alerts_done and (not resolving or (observed.gone and resolved)):
            return observed
        if now - started >= args.timeout:
            say(logfmt.line(event="timeout", after_seconds=round(now - started, 1)))
            return observed
        if now - last_progress >= PROGRESS_SECONDS:
            last_progress = now
            firing = ",".join(r.name for r in records if r.fired_at is not None and r.resolved_at is None)
            print(
                logfmt.line(
                    event="waiting",
                    seconds=round(now - started),
                    timeout=round(args.timeout),
                    deaths=len(observed.deaths),
                    worker_kills=len(observed.worker_kills),
                    restarts=sum(observed.restarts.values()),
                    firing=firing or "none",
                ),
                file=err,
                flush=True,
            )
        time.sleep(POLL_SECONDS)
