"""verify's HTML report (--report): the page (oomtools/html_report.py) from the result tree and what was gathered.

Memory over time for each pod from the hog's own step lines (the logs the watch kept), against the limit its start
line found and the kill range the stack announced; with --prometheus, the cluster's own
`container_memory_working_set_bytes` beside them. Times are seconds from the start of the watch.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import TYPE_CHECKING, Final

from oomtools import html_report
from oomtools.html_report import Chart, Mark, Page, Row, Step, Table
from oomtools.verdict import FAILED, PASSED
from oomtools.verify import fleet, judge
from oomtools.verify.detectors import AT_START, kills_of
from oomtools.verify.observe import Event
from oomtools.verify.report import VERDICTS
from workload import logfmt

if TYPE_CHECKING:
    from oomtools.verdict import Item
    from oomtools.verify.detectors import Coverage
    from oomtools.verify.fleet import NodeVerdict
    from oomtools.verify.observe import ContainerLog
    from oomtools.verify.prediction import Prediction
    from oomtools.verify.results import Gathered

WORKING_SET: Final = "container_memory_working_set_bytes"
MIB: Final = 1 << 20


def working_set_selector(namespace: str) -> str:
    """The cluster's own reading of each container's memory, as a dashboard shows it."""
    return f'{WORKING_SET}{{namespace="{namespace}"}}'


def write(path: Path, page: Page) -> None:
    html_report.write(path, page)


def _stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _parsed(log: ContainerLog) -> list[tuple[float, dict[str, str]]]:
    found = []
    for stamp, text in log.lines:
        try:
            found.append((_stamp(stamp), logfmt.parse(text)))
        except ValueError:
            continue
    return found


def _logs_of(gathered: Gathered, pod: str) -> list[list[tuple[float, dict[str, str]]]]:
    """The pod's kept logs, each as (time, fields) lines, oldest container first."""
    logs = [_parsed(log) for log in gathered.observed.logs.values() if log.pod == pod]
    return sorted((log for log in logs if log), key=lambda lines: lines[0][0])


def _first_start(lines: list[list[tuple[float, dict[str, str]]]]) -> dict[str, str] | None:
    return next((fields for log in lines for _, fields in log if fields.get("event") == "start"), None)


def _predictions(gathered: Gathered) -> dict[str, Prediction]:
    """Each pod's prediction, as the judge holds it (its start line's swap moves its steps and time)."""
    return judge.pod_predictions(gathered.prediction, gathered.observed)


def _chart(gathered: Gathered, pod: str, key: str) -> Chart:
    origin, observed = gathered.started, gathered.observed
    prediction = _predictions(gathered).get(pod, gathered.prediction)
    logs = _logs_of(gathered, pod)
    runs: list[list[Step]] = []
    for log in logs:
        run: list[Step] = []
        for at, fields in log:
            if fields.get("event") == "start" and run:  # a supervised worker's next run
                runs.append(run)
                run = []
            if fields.get("event") == "step":
                run.append(Step(at - origin, fields))
        runs.append(run)
    start = _first_start(logs) or {}
    node = observed.pod_nodes.get(pod)
    chart = Chart(key, f"pod {pod}" + (f" on node {node}" if node else ""), [run for run in runs if run])
    limit = html_report.number(start.get("limit_mib"))
    chart.limit_mib = None if math.isnan(limit) else limit
    increment = html_report.number(gathered.env.get("MEMORY_INCREMENT_MB") or start.get("increment_mib"))
    if prediction.steps is not None and not math.isnan(increment):
        steps = prediction.steps
        chart.kill_range = ((steps.earliest - 1) * increment, steps.latest * increment)
        chart.kill_range_label = f"kill announced in steps {steps.earliest}..{steps.latest} (predictedOomKillStep"
        chart.kill_range_label += f", moved by {prediction.swap_mib} MiB of swap)" if prediction.swap_mib else ")"
    deaths = sorted((d for d in observed.deaths.values() if d.pod == pod), key=lambda d: d.finished_at)
    for death in deaths:
        at = death.finished_at.timestamp() - origin
        label = f"{death.reason} {death.exit_code}"
        (chart.kills if death.reason == "OOMKilled" else chart.deaths).append(Mark(at, label))
        back_off = observed.back_offs.get(death.container_id)
        if back_off is not None:
            chart.back_offs.append(Mark(at, f"back-off {back_off.seconds:g} s", at + back_off.seconds))
    for worker in sorted((w for w in observed.worker_kills.values() if w.pod == pod), key=lambda w: w.at):
        chart.kills.append(Mark(worker.at.timestamp() - origin, "worker killed"))
    for record in gathered.alerts:
        for when, what in ((record.fired_at, "fired"), (record.resolved_at, "resolved")):
            if when is not None:
                chart.alerts.append(Mark(when - origin, f"{record.name} {what}"))
    if gathered.delivery is not None:
        for (alert, held_pod, _), times in sorted(gathered.delivery.active.items()):
            if held_pod == pod and times:
                chart.alerts.append(Mark(min(times) - origin, f"{alert} delivered"))
    if gathered.samples is not None:
        containers = {log.container for log in observed.logs.values() if log.pod == pod}
        series = gathered.samples(working_set_selector(gathered.namespace), origin, gathered.coverage_until)
        for labels, points in series:
            if labels.get("pod") == pod and labels.get("container") in containers:
                chart.cluster += [(t - origin, value / MIB) for t, value in points]
    return chart


def _timeline(gathered: Gathered, coverages: list[Coverage]) -> list[Row]:
    origin, observed = gathered.started, gathered.observed
    predictions = _predictions(gathered)
    rows: list[Row] = []
    at_start = {c.kill.container_id for c in coverages if c.kill.kind == AT_START}
    for death in observed.deaths.values():
        at = death.finished_at.timestamp() - origin
        where = f"{death.pod}/{death.container}"
        seconds = death.seconds_from_start
        if death.reason != "OOMKilled":
            rows.append(Row(at, "death", where, f"{death.reason}, exit code {death.exit_code}", FAILED))
            continue
        if death.container_id.rpartition("://")[2] in at_start:
            rows.append(Row(at, "OOM kill", where, f"killed at start (a tmpfs restart), {seconds:g} s", PASSED))
            continue
        prediction = predictions.get(death.pod, gathered.prediction)
        step = prediction.kill_step(death.message)
        detail = f"in step {step}"
        if prediction.steps is not None:
            detail += f" (announced {prediction.steps.earliest}..{prediction.steps.latest}: "
            detail += f"{prediction.steps.where(step)})"
        if prediction.earliest is not None and prediction.latest is not None:
            detail += f", {seconds:g} s from the container's start (predicted {prediction.earliest:g}.."
            detail += f"{prediction.latest:g} s)"
        ok = prediction.in_announced_steps(death.message) and prediction.on_time(seconds)
        rows.append(Row(at, "OOM kill", where, detail, PASSED if ok else FAILED))
    for after, back_off in observed.back_offs.items():
        ended = observed.deaths.get(after)
        if ended is None:
            continue
        at = ended.finished_at.timestamp() - origin + back_off.seconds
        detail = f"after a back-off of {back_off.seconds:g} s (restart count {back_off.restart_count})"
        rows.append(Row(at, "restart", f"{back_off.pod}/{back_off.container}", detail))
    for worker in observed.worker_kills.values():
        detail = f"the worker killed, oom_kill={worker.fields.get('oom_kill', '?')}, the container lived on"
        rows.append(Row(worker.at.timestamp() - origin, "worker kill", f"{worker.pod}/{worker.container}", detail))
    first_kill = observed.first_kill_at()
    for record in gathered.alerts:
        expected = "expected to fire" if record.expected else "expected to stay quiet"
        if record.fired_at is not None:
            after = "" if first_kill is None else f", {record.fired_at - first_kill:.1f} s after the first kill"
            status = PASSED if record.expected else FAILED
            rows.append(Row(record.fired_at - origin, "alert fired", record.name, expected + after, status))
        if record.resolved_at is not None:
            rows.append(Row(record.resolved_at - origin, "alert resolved", record.name, ""))
    if gathered.delivery is not None:
        for (alert, pod, container), times in gathered.delivery.active.items():
            if times:
                detail = f"Alertmanager held it active for its receivers ({pod}/{container})"
                rows.append(Row(min(times) - origin, "alert delivered", alert, detail))
    if observed.gone and observed.gone_at is not None:
        rows.append(Row(observed.gone_at - origin, "stack gone", gathered.namespace, "scaled to 0 or destroyed"))
    for seen in gathered.seen:
        if isinstance(seen, Event) and seen.name == "timeout":
            rows.append(Row(float(str(seen.fields["after_seconds"])), "timeout", "", "the watch's time was up"))
    return sorted(rows, key=lambda row: (row.at if row.at is not None else -1e18, row.what))


def _facts(gathered: Gathered) -> list[Table]:
    observed = gathered.observed
    nodes = {str(node["metadata"]["name"]): node for node in gathered.nodes}
    starts = dict(gathered.starts)
    for pod, node in observed.pod_nodes.items():
        start = _first_start(_logs_of(gathered, pod))
        if start is not None:
            starts.setdefault(node, start)
    names = sorted(set(observed.pod_nodes.values()) | (set(nodes) if gathered.pod_spec is not None else set()))
    if not names:
        start = next((s for pod in sorted(observed.pods_seen) if (s := _first_start(_logs_of(gathered, pod)))), None)
        names, starts = ["?"], {"?": start} if start else {}
    rows = []
    keys = ["kernel", "cgroup", "driver", "oom_group", "memory_high", "swap", "kubelet", "runtime"]
    keys.append("allocatable_memory")
    for name in names:
        about = fleet.facts(nodes.get(name, {"metadata": {"name": name}}), starts.get(name))
        rows.append([name, *(about.get(key, "?") for key in keys)])
    prediction = gathered.prediction
    env = gathered.env
    stack = Table(
        "stack",
        "The stack",
        "",
        ["namespace", "workload", "replicas", "memory kind", "process model", "increment", "interval", "predicted"],
        [
            [
                gathered.namespace,
                gathered.kind,
                str(gathered.replicas),
                env.get("MEMORY_KIND", "anonymous") or "anonymous",
                env.get("PROCESS_MODEL", "single") or "single",
                f"{env.get('MEMORY_INCREMENT_MB', '?')} MiB",
                f"{env.get('INCREMENT_INTERVAL_MS', '?')} ms",
                "no kill (a ceiling holds it)"
                if not prediction.kills
                else f"kill in {prediction.earliest:g}..{prediction.latest:g} s"
                + (f", steps {prediction.steps.earliest}..{prediction.steps.latest}" if prediction.steps else ""),
            ]
        ],
    )
    header = ["node", *keys]
    header[header.index("oom_group")] = "memory.oom.group"
    caption = (
        "kernel, kubelet and runtime from the node object; cgroup, memory.oom.group, memory.high and swap from the "
        "hog's start line"
    )
    return [stack, Table("nodes", "The nodes", caption, header, rows)]


def page(
    gathered: Gathered,
    tree: Item,
    coverages: list[Coverage],
    verdicts: list[NodeVerdict] | None,
    verdict_line: str,
) -> Page:
    """verify's page: the verdict, the facts, a chart per pod, the timeline, coverage and fleet, every check."""
    observed = gathered.observed
    pods = sorted(observed.pods_seen | {log.pod for log in observed.logs.values()})
    charts = [_chart(gathered, pod, f"chart-{number}") for number, pod in enumerate(pods, start=1)]
    tables = []
    if coverages:  # a row per signal, a column per kill (the terminal's table turned: signals outnumber kills)
        detectors = list(coverages[0].seen)
        tables.append(
            Table(
                "coverage",
                "Which signals saw each kill",
                "yes: the signal showed the kill; no: it did not; -: not read (no --prometheus, no --alertmanager)",
                ["signal", *(c.kill.label for c in coverages)],
                [["kind", *(c.kill.kind for c in coverages)]]
                + [[name, *(c.seen[name] for c in coverages)] for name in detectors],
            )
        )
    if verdicts:
        keys = list(verdicts[0].facts)
        tables.append(
            Table(
                "fleet",
                "The fleet: a verdict per node",
                "",
                ["node", "verdict", *keys, "what happened"],
                [[v.node, v.verdict, *(v.facts.get(k, "?") for k in keys), v.happened] for v in verdicts],
            )
        )
    started = datetime.datetime.fromtimestamp(gathered.started, datetime.UTC).isoformat(timespec="seconds")
    kills = len(kills_of(observed))
    names = ", ".join(pods) or "none"
    about = [
        f"Watched {gathered.kind.lower()} {gathered.namespace} ({gathered.selector}) from {started} for "
        f"{gathered.seconds:.1f} s: pods {names}; OOM kills seen: {kills}. Times below are seconds from the "
        "start of the watch.",
    ]
    return Page(
        "oom-killer verify",
        VERDICTS[tree.status],
        tree.status,
        verdict_line,
        about,
        _facts(gathered),
        charts,
        _timeline(gathered, coverages),
        tables,
        tree,
    )
