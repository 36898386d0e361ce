"""What verify says: the watch line it starts with, each alert's line, the verdict line, and the JUnit report."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from workload import logfmt

if TYPE_CHECKING:  # for the annotations only: Prometheus' client is imported where used, and observe imports this
    from oomtools import alert_client as prom
    from oomtools.verify.detectors import Coverage
    from oomtools.verify.judge import Check, Prediction
    from oomtools.verify.observe import Observed


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


def _alert_line(record: prom.AlertRecord, observed: Observed, *, summary: bool = False) -> str:
    latency = record.latency(observed.first_kill_at())
    if record.resolved_at is not None:
        resolved: object = "true"
    elif observed.gone and record.fired_at is not None:
        resolved = "false"
    else:
        resolved = "n/a"  # nothing was scaled down or destroyed in the window
    return logfmt.line(
        event="alert_summary" if summary else "alert",
        name=record.name,
        expected="fires" if record.expected else "quiet",
        fired=record.fired_at is not None,
        latency_seconds=None if latency is None else round(latency, 1),
        resolved=resolved,
        resolved_after_gone_seconds=(
            round(record.resolved_at - observed.gone_at, 1)
            if record.resolved_at is not None and observed.gone_at is not None
            else None
        ),
    )


def verdict_line(
    checks: list[Check], observed: Observed, records: list[prom.AlertRecord], seconds: float, nodes: int | None = None
) -> str:
    """The one line that ends the run: as predicted or not, what was counted, and each failed check."""
    ok = all(check.ok for check in checks)
    failed = [check for check in checks if not check.ok]
    deaths = list(observed.deaths.values())
    back_offs = sorted(b.seconds for b in observed.back_offs.values())
    return logfmt.line(
        verdict="as-predicted" if ok else "not-as-predicted",
        oom_kills=sum(d.reason == "OOMKilled" for d in deaths),
        deaths=len(deaths),
        worker_kills=len(observed.worker_kills),
        restarts=sum(observed.restarts.values()),
        back_off_seconds=",".join(f"{s:g}" for s in back_offs) or "none",
        alerts_fired=f"{sum(r.fired_at is not None for r in records)}/{len(records)}",
        **({} if nodes is None else {"fleet_nodes": nodes}),
        seconds=round(seconds, 1),
        failed="; ".join(f"{c.name} ({c.detail})" for c in failed) or None,
    )


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


def write_junit(path: Path, checks: list[Check], seconds: float) -> None:
    suite = ET.Element(
        "testsuite",
        name="oom-killer verify",
        tests=str(len(checks)),
        failures=str(sum(not c.ok for c in checks)),
        time=f"{seconds:.1f}",
    )
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="oom-killer.verify", name=check.name)
        if not check.ok:
            ET.SubElement(case, "failure", message=check.detail).text = check.detail
        else:
            ET.SubElement(case, "system-out").text = check.detail
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
