"""What `oom-killer demo` writes besides its verdict line: `--report` (the HTML page, oomtools/html_report.py), `--json`
(the verdict as JSON) and `--junit` (the checks as a JUnit suite), all from the run's result tree and its log.

Times on the page are seconds from the container's start, on the engine's clock (the log lines' stamps).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from oomtools import html_report, verdict
from oomtools.html_report import Chart, Mark, Page, Row, Step, Table
from oomtools.verdict import FAILED, PASSED
from workload import logfmt

if TYPE_CHECKING:
    from oomtools.rehearsal import Outcome

JSON_SCHEMA: Final = "oom-killer/demo-verdict"
JSON_VERSION: Final = 1
STACK_HEADER: Final = ["stack", "limit", "increment", "interval", "kind", "model", "predicted"]


@dataclass(frozen=True)
class DemoRun:
    """One demo run, as its verdict was said: what ran, how it ended, and the judgement."""

    stack: str
    env: dict[str, str]
    limit_mib: int
    predicted_seconds: dict[str, float] | None  # the stack's predictedSecondsToOomKill
    outcome: Outcome
    judged: verdict.RunVerdict
    fields: dict[str, object]  # the verdict line's, in its order
    engine: dict[str, Any]  # the engine's `docker info`

    @property
    def line(self) -> str:
        return logfmt.line(**self.fields)


def write_json(path: Path, run: DemoRun, exit_code: int) -> None:
    """The verdict as JSON: the verdict line's fields, the exit code, and every check with what it was judged over."""
    document = {
        "schema": JSON_SCHEMA,
        "version": JSON_VERSION,
        "verdict": run.judged.happened,
        "predicted": run.judged.predicted,
        "as_predicted": run.judged.item.ok,
        "exit_code": exit_code,
        "fields": run.fields,
        "checks": verdict.tree_json(run.judged.item),
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def write_junit(path: Path, run: DemoRun) -> None:
    verdict.write_junit(path, run.judged.item, run.outcome.seconds, "oom-killer demo")


def _timed(run: DemoRun) -> list[tuple[float, dict[str, str]]]:
    """The log's events with the engine's time of each line (lines the engine gave no time are left out)."""
    found = []
    for text, at in zip(run.outcome.lines, run.outcome.line_times, strict=False):
        fields = logfmt.parse(text)
        if at is not None and "event" in fields:
            found.append((at, fields))
    return found


def _origin(run: DemoRun, timed: list[tuple[float, dict[str, str]]]) -> float:
    if run.outcome.started_at is not None:
        return run.outcome.started_at
    return timed[0][0] if timed else 0.0


def _kill_times(run: DemoRun, timed: list[tuple[float, dict[str, str]]]) -> list[float | None]:
    """When each kill came, in verdict.kills_against_announced's order: each worker's, then the container's."""
    times: list[float | None] = [
        at for at, fields in timed if fields.get("event") == "child_exit" and fields.get("signal") == "SIGKILL"
    ]
    if run.outcome.oom_killed and run.outcome.exit_code == 137:
        times.append(run.outcome.finished_at)
    return times


def _chart(run: DemoRun, timed: list[tuple[float, dict[str, str]]], origin: float) -> Chart:
    runs: list[list[Step]] = [[]]
    start: dict[str, str] = {}
    for at, fields in timed:
        if fields["event"] == "start":
            start = start or fields
            if runs[-1]:
                runs.append([])
        elif fields["event"] == "step":
            runs[-1].append(Step(at - origin, fields))
    limit = html_report.number(start.get("limit_mib"))
    chart = Chart("chart-1", f"the {run.stack} stack's container", [r for r in runs if r])
    chart.limit_mib = float(run.limit_mib) if math.isnan(limit) else limit
    announced = verdict.announced(start)
    increment = html_report.number(start.get("increment_mib"))
    if announced is not None and not math.isnan(increment):
        chart.kill_range = ((announced.earliest - 1) * increment, announced.latest * increment)
        chart.kill_range_label = f"kill announced in steps {announced.earliest}..{announced.latest} (its start line)"
    container_killed = run.outcome.oom_killed and run.outcome.exit_code == 137
    kills = verdict.kills_against_announced([fields for _, fields in timed], container_killed)
    for kill, when in zip(kills, _kill_times(run, timed), strict=False):
        if when is not None:
            chart.kills.append(Mark(when - origin, f"kill in step {kill.step}"))
    return chart


def _timeline(run: DemoRun, timed: list[tuple[float, dict[str, str]]], origin: float) -> list[Row]:
    rows: list[Row] = []
    for at, fields in timed:
        event = fields["event"]
        if event == "start":
            announced = verdict.announced(fields)
            detail = f"limit {fields.get('limit_mib', '?')} MiB"
            if announced is not None:
                detail += f", kill announced in steps {announced.earliest}..{announced.latest}"
                detail += f", {fields.get('predicted_seconds', '?')} s after its first step"
            rows.append(Row(at - origin, "hog start", "", detail))
        elif event == "supervisor_start":
            rows.append(Row(at - origin, "supervisor start", "", f"oom_group={fields.get('oom_group', 'none')}"))
        elif event == "holding":
            held, charged = fields.get("allocated_mib", "?"), fields.get("cgroup_usage_mib", "?")
            rows.append(Row(at - origin, "holding", "", f"held at {held} MiB, cgroup usage {charged} MiB"))
    container_killed = run.outcome.oom_killed and run.outcome.exit_code == 137
    starts = [at for at, fields in timed if fields["event"] == "start"]
    kills = verdict.kills_against_announced([fields for _, fields in timed], container_killed)
    for kill, when in zip(kills, _kill_times(run, timed), strict=False):
        if when is None:
            continue
        own_start = max((s for s in starts if s <= when), default=None)
        detail = f"in step {kill.step}"
        if kill.announced is not None:
            detail += f" (announced {kill.announced.earliest}..{kill.announced.latest}: {kill.where})"
        else:
            detail += f" ({kill.where})"
        if own_start is not None:
            detail += f", {when - own_start:.1f} s after its start line"
        what = "OOM kill" if kill is kills[-1] and container_killed else "worker kill"
        rows.append(Row(when - origin, what, "", detail, PASSED if kill.item.ok else FAILED))
    end = run.outcome.finished_at
    if end is not None:
        detail = f"exit code {run.outcome.exit_code}, OOMKilled {str(run.outcome.oom_killed).lower()}"
        rows.append(Row(end - origin, "container ended", "", detail))
    return sorted(rows, key=lambda row: row.at if row.at is not None else -1e18)


def _facts(run: DemoRun, timed: list[tuple[float, dict[str, str]]]) -> list[Table]:
    start = next((fields for _, fields in timed if fields["event"] in ("start", "supervisor_start")), {})
    hog = next((fields for _, fields in timed if fields["event"] == "start"), {})
    engine = run.engine
    cgroup = hog.get("cgroup", "")
    rows = [
        [
            str(engine.get("KernelVersion", "?")),
            cgroup.partition(":")[0] or f"v{engine.get('CgroupVersion', '?')}",
            str(engine.get("CgroupDriver", "?")),
            start.get("oom_group", "n/a" if cgroup.startswith("v1") else "?"),
            hog.get("memory_high_mib", "none"),
            hog.get("swap_max_mib", "none"),
            "none: the Docker engine runs it, as the kubelet would",
            f"Docker {engine.get('ServerVersion', '?')}",
        ]
    ]
    header = ["kernel", "cgroup", "driver", "memory.oom.group", "memory_high", "swap", "kubelet", "runtime"]
    env = run.env
    settings = [
        [
            run.stack,
            f"{run.limit_mib} MiB",
            f"{env.get('MEMORY_INCREMENT_MB', '?')} MiB",
            f"{env.get('INCREMENT_INTERVAL_MS', '?')} ms",
            env.get("MEMORY_KIND", "anonymous") or "anonymous",
            env.get("PROCESS_MODEL", "single") or "single",
            run.judged.predicted,
        ]
    ]
    return [
        Table("stack", "The stack", "", STACK_HEADER, settings),
        Table("engine", "The engine", "from docker info, and the hog's start line", header, rows),
    ]


def page(run: DemoRun) -> Page:
    timed = _timed(run)
    origin = _origin(run, timed)
    about = [
        f"The {run.stack} stack's container run on a Docker engine for {run.outcome.seconds:.1f} s. Times below are "
        "seconds from the container's start (the engine's clock)."
    ]
    return Page(
        "oom-killer demo",
        run.judged.happened,
        run.judged.item.status,
        run.line,
        about,
        _facts(run, timed),
        [_chart(run, timed, origin)],
        _timeline(run, timed, origin),
        [],
        run.judged.item,
    )


def write_report(path: Path, run: DemoRun) -> None:
    html_report.write(path, page(run))
