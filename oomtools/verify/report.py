"""What verify says, every line of it: the watch line it starts with, each thing the watch saw, each alert's line,
the node and coverage tables, the verdict line, and the JUnit report, the last two from the one result tree."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from oomtools.verdict import FAILED, NOTHING_CHECKED, PASSED
from oomtools.verdict import write_junit as junit_of_tree
from oomtools.verify.observe import AlertState, Event
from workload import logfmt

if TYPE_CHECKING:  # annotations only: Prometheus' client is imported where used
    from oomtools import alert_client as prom
    from oomtools.verdict import Item
    from oomtools.verify.detectors import Coverage
    from oomtools.verify.fleet import NodeVerdict
    from oomtools.verify.observe import Observed
    from oomtools.verify.prediction import Prediction

PROGRESS: frozenset[str] = frozenset({"waiting"})  # the events written on stderr: progress, not findings
# The verdict line's verdict= for the result tree's status.
VERDICTS: Final = {PASSED: "as-predicted", FAILED: "not-as-predicted", NOTHING_CHECKED: "nothing-checked"}


def watch_line(namespace: str, selector: str, prediction: Prediction, names: tuple[str, ...]) -> str:
    """What is watched, and what its settings predict."""
    return logfmt.line(
        event="watch",
        namespace=namespace,
        selector=selector,
        replicas=prediction.replicas,
        predicted_seconds=f"{prediction.earliest}..{prediction.latest}" if prediction.kills else "none",
        predicted_steps="none"
        if prediction.steps is None or not prediction.kills
        else f"{prediction.steps.earliest}..{prediction.steps.latest}",
        process_model="supervised" if prediction.supervised else "single",
        alerts=",".join(names) or "none",
    )


def line(seen: Event | AlertState) -> str:
    """One thing the watch saw, as its line."""
    if isinstance(seen, AlertState):
        return alert_line(seen)
    return logfmt.line(event=seen.name, **seen.fields)


def alert_line(state: AlertState, *, summary: bool = False) -> str:
    """An alert's line: as it fired or resolved, or (summary) as it stood at the end."""
    latency = state.latency
    if state.resolved_at is not None:
        resolved: object = "true"
    elif state.gone and state.fired_at is not None:
        resolved = "false"
    else:
        resolved = "n/a"  # nothing was scaled down or destroyed in the window
    return logfmt.line(
        event="alert_summary" if summary else "alert",
        name=state.name,
        expected="fires" if state.expected else "quiet",
        fired=state.fired_at is not None,
        latency_seconds=None if latency is None else round(latency, 1),
        resolved=resolved,
        resolved_after_gone_seconds=(
            round(state.resolved_at - state.gone_at, 1)
            if state.resolved_at is not None and state.gone_at is not None
            else None
        ),
    )


def prometheus_lines(url: str, version: str, missing: list[str]) -> list[str]:
    """Which Prometheus answers, and the alerts asked for that it has no rule for."""
    lines = [f"verify: Prometheus {version} at {url}"]
    if missing:
        lines.append(
            f"verify: Prometheus has no rule {', '.join(missing)}: load alerts/oom-killer.rules.yaml "
            "(or prometheusRule=true)"
        )
    return lines


def from_line(path: Path, namespace: str, started: float) -> str:
    """What --from judges: a watch's saved results, with no cluster."""
    at = datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds")
    return f"verify: judging {path}: what a watch of {namespace} from {at} saved (no cluster is read)"


def alertmanager_line(url: str, version: str) -> str:
    return f"verify: Alertmanager {version} at {url}"


@dataclass(frozen=True)
class Terminal:
    """Where verify's lines go: findings on `out`, progress and tables on `err`."""

    out: TextIO
    err: TextIO

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def seen(self, seen: Event | AlertState) -> None:
        if isinstance(seen, Event) and seen.name in PROGRESS:
            self.note(line(seen))
        else:
            self.say(line(seen))

    def table(self, rows: list[str]) -> None:
        for row in rows:
            print(f"verify: {row}", file=self.err)


def verdict_line(
    tree: Item,
    observed: Observed,
    records: list[prom.AlertRecord],
    seconds: float,
    nodes: int | None = None,
    supervised_end: str | None = None,
    swap_mib: str | None = None,
) -> str:
    """The one line that ends the run: as predicted or not, what was counted, and each failed check; for a supervised
    stack, the end its pods' start lines predicted, and where a start line said the cgroup may use swap, the swap its
    pods were judged by (judge.resolved)."""
    deaths = list(observed.deaths.values())
    back_offs = sorted(b.seconds for b in observed.back_offs.values())
    return logfmt.line(
        verdict=VERDICTS[tree.status],
        oom_kills=sum(d.reason == "OOMKilled" for d in deaths),
        deaths=len(deaths),
        worker_kills=len(observed.worker_kills),
        restarts=sum(observed.restarts.values()),
        back_off_seconds=",".join(f"{s:g}" for s in back_offs) or "none",
        alerts_fired=f"{sum(r.fired_at is not None for r in records)}/{len(records)}",
        **({} if nodes is None else {"fleet_nodes": nodes}),
        **({} if supervised_end is None else {"supervised_end": supervised_end}),
        **({} if swap_mib is None else {"swap_mib": swap_mib}),
        seconds=round(seconds, 1),
        failed="; ".join(f"{c.name} ({c.detail})" for c in tree.failed) or None,
    )


def node_line(verdict: NodeVerdict) -> str:
    """One node: its verdict, what happened there, and what the node is."""
    return logfmt.line(
        event="node", node=verdict.node, verdict=verdict.verdict, happened=verdict.happened, **verdict.facts
    )


def fleet_table(verdicts: list[NodeVerdict]) -> list[str]:
    """The node verdicts aligned for the terminal: a row per node."""
    if not verdicts:
        return []
    keys = list(verdicts[0].facts)
    header = ["node", "verdict", *keys, "what happened"]
    return aligned([header, *([v.node, v.verdict, *(v.facts.get(k, "?") for k in keys), v.happened] for v in verdicts)])


def coverage_line(coverage: Coverage) -> str:
    """One kill and which detectors saw it (yes, no, or - where not read)."""
    kill = coverage.kill
    seen = {name.replace(" ", "_"): value for name, value in coverage.seen.items()}
    at = datetime.datetime.fromtimestamp(kill.at, datetime.UTC).isoformat(timespec="seconds")
    return logfmt.line(event="coverage", pod=kill.pod, container=kill.container, kind=kill.kind, at=at, **seen)


def coverage_table(coverages: list[Coverage]) -> list[str]:
    """The coverage aligned for the terminal: a row per kill, a column per detector."""
    if not coverages:
        return []
    header = ["kill", "kind", *coverages[0].seen]
    return aligned([header, *([c.kill.label, c.kill.kind, *c.seen.values()] for c in coverages)])


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines whose columns line up, two spaces apart (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def write_junit(path: Path, tree: Item, seconds: float) -> None:
    """The result tree as a JUnit suite (verdict.write_junit): a test case per check."""
    junit_of_tree(path, tree, seconds, "oom-killer verify")
