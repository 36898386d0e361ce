"""One self-contained HTML page of a run, for a ticket: the verdict, the facts it rests on, memory over time for each
pod, the timeline, the tables and every check. `oom-killer verify --report` and `oom-killer demo --report` write it
from their own result tree and what they observed (verify/report_page.py, demo_report.py); this module only draws.

The page loads nothing: no script, no font, no image from anywhere (a Content-Security-Policy says so to the
browser); the charts are matplotlib's SVG, inlined, their text drawn as paths. The same run gives the same bytes:
each chart has a fixed `svg.hashsalt` and no date. Each drawn thing has an id a browser test can count:
`<chart>-<series>` (one marker per step line), `<chart>-limit`, `<chart>-announced` (the kill range),
`<chart>-kill-<n>` (one per kill), `<chart>-death-<n>`, `<chart>-back-off-<n>`, `<chart>-alert-<n>`,
`<chart>-cluster-working-set`.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from oomtools.verdict import FAILED, NOTHING_CHECKED, PASSED, SKIPPED, Item

# Each series a step line gives: (the id's suffix, the line's field, the legend's words).
SERIES: Final = (
    ("allocated", "allocated_mib", "allocated (the hog's own)"),
    ("rss", "rss_mib", "RSS"),
    ("cgroup-usage", "cgroup_usage_mib", "cgroup usage (what the limit is held to)"),
    ("working-set", "working_set_mib", "working set (the hog's reading)"),
)
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class Step:
    at: float  # seconds on the page's clock
    fields: dict[str, str]  # the step line's


@dataclass(frozen=True)
class Mark:
    at: float  # seconds on the page's clock
    label: str
    until: float | None = None  # a span's end (a back-off)


@dataclass
class Chart:
    """Memory over time for one pod: the hog's own step lines against the limit and the announced kill range."""

    key: str  # unique in the page, safe in an id
    title: str
    runs: list[list[Step]]  # each container's (or worker's) steps: a gap between runs
    limit_mib: float | None = None
    kill_range: tuple[float, float] | None = None  # the hog's allocated MiB in which the kill is announced
    kill_range_label: str = ""
    kills: list[Mark] = field(default_factory=list)
    deaths: list[Mark] = field(default_factory=list)  # the container's other deaths (an error, say)
    back_offs: list[Mark] = field(default_factory=list)
    alerts: list[Mark] = field(default_factory=list)
    cluster: list[tuple[float, float]] = field(default_factory=list)  # Prometheus' working set: seconds, MiB

    @property
    def steps(self) -> int:
        return sum(len(run) for run in self.runs)


@dataclass(frozen=True)
class Row:
    """One timeline entry."""

    at: float | None
    what: str
    where: str
    detail: str
    status: str = ""  # PASSED, FAILED, ...: how it stands against the prediction, where it is judged


@dataclass
class Table:
    key: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Page:
    title: str
    verdict: str  # the verdict line's verdict=
    status: str  # the result tree's
    verdict_line: str
    about: list[str]  # what ran, and the clock the times are on
    facts: list[Table]
    charts: list[Chart]
    timeline: list[Row]
    tables: list[Table]  # the detector coverage, the fleet
    tree: Item


# ---------------------------------------------------------------------------------------------------------------
# The charts


def number(text: str | None) -> float:
    """A line's number (NaN where it has none: a gap in the chart)."""
    try:
        return math.nan if text is None or text in ("", "none") else float(text)
    except ValueError:
        return math.nan


def chart_svg(chart: Chart, salt: str) -> str:
    """The chart as an inline <svg> element (matplotlib, no pyplot state, text as paths)."""
    import matplotlib
    from matplotlib.figure import Figure

    # A salt of the chart's own: the ids matplotlib makes are unique in the page, and the same for the same run.
    with matplotlib.rc_context(
        {"svg.hashsalt": salt, "svg.fonttype": "path", "font.size": 8.5, "axes.grid": True, "grid.alpha": 0.3}
    ):
        figure = Figure(figsize=(10, 4.2))
        axes = figure.add_subplot()
        for suffix, name, label in SERIES:
            xs: list[float] = []
            ys: list[float] = []
            for run in chart.runs:
                xs += [step.at for step in run] + [math.nan]
                ys += [number(step.fields.get(name)) for step in run] + [math.nan]
            if any(not math.isnan(y) for y in ys):
                axes.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=label, gid=f"{chart.key}-{suffix}")
        if chart.cluster:
            axes.step(
                [at for at, _ in chart.cluster],
                [mib for _, mib in chart.cluster],
                where="post",
                marker=".",
                linewidth=1,
                color="tab:cyan",
                label="container_memory_working_set_bytes (Prometheus)",
                gid=f"{chart.key}-cluster-working-set",
            )
        if chart.kill_range is not None:
            low, high = chart.kill_range
            axes.axhspan(
                low, high, color="tab:orange", alpha=0.15, label=chart.kill_range_label, gid=f"{chart.key}-announced"
            )
        if chart.limit_mib is not None:
            axes.axhline(
                chart.limit_mib,
                color="tab:red",
                linestyle="--",
                linewidth=1.2,
                label=f"limit {chart.limit_mib:g} MiB",
                gid=f"{chart.key}-limit",
            )
        top = chart.limit_mib if chart.limit_mib is not None else max((_top(chart), 1.0))
        for index, span in enumerate(chart.back_offs, start=1):
            axes.axvspan(
                span.at,
                span.until if span.until is not None else span.at,
                color="grey",
                alpha=0.2,
                label="back-off" if index == 1 else None,
                gid=f"{chart.key}-back-off-{index}",
            )
        for index, alert in enumerate(chart.alerts, start=1):
            axes.axvline(
                alert.at,
                color="tab:purple",
                linestyle=":",
                linewidth=1.2,
                label="alert fired, delivered or resolved" if index == 1 else None,
                gid=f"{chart.key}-alert-{index}",
            )
        for marks, kind, style in ((chart.kills, "kill", "X"), (chart.deaths, "death", "s")):
            for index, mark in enumerate(marks, start=1):
                axes.plot(
                    [mark.at],
                    [top],
                    marker=style,
                    markersize=9,
                    color="black" if kind == "kill" else "tab:brown",
                    linestyle="none",
                    label=("OOM kill" if kind == "kill" else "other death") if index == 1 else None,
                    gid=f"{chart.key}-{kind}-{index}",
                )
        axes.set_xlabel("seconds")
        axes.set_ylabel("MiB")
        axes.set_ylim(bottom=0, top=max(top, _top(chart)) * 1.12)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = out.getvalue()
    return text[text.index("<svg") :]


def _top(chart: Chart) -> float:
    values = [number(step.fields.get(name)) for run in chart.runs for step in run for _, name, _ in SERIES]
    values += [mib for _, mib in chart.cluster]
    if chart.kill_range is not None:
        values.append(chart.kill_range[1])
    return max((v for v in values if not math.isnan(v)), default=1.0)


# ---------------------------------------------------------------------------------------------------------------
# The page

STYLE: Final = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px;
  color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ddd; }
header.verdict { padding: .8em 1.2em; border-radius: 6px; border-left: 8px solid #9aa0a6; }
.passed { background: #e9f7ef; } .failed { background: #fdecea; } .nothing-checked { background: #fff4e5; }
.skipped { background: #f1f3f4; }
header.passed { border-left-color: #1e8e3e; } header.failed { border-left-color: #c5221f; }
header.nothing-checked { border-left-color: #e37400; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { white-space: pre-wrap; word-break: break-all; margin: .4em 0 0; }
table { border-collapse: collapse; margin: .3em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } .scroll { overflow-x: auto; }
caption { text-align: left; color: #555; padding: .2em 0; caption-side: top; }
td.yes { background: #e9f7ef; } td.no { background: #fdecea; } td.unread { color: #999; }
td.status { font-weight: 600; white-space: nowrap; }
figure { margin: 0 0 1.2em; } figcaption { color: #555; font-size: 13px; } svg { max-width: 100%; height: auto; }
.about { color: #444; margin: .2em 0; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _status_class(status: str) -> str:
    return {PASSED: "passed", FAILED: "failed", NOTHING_CHECKED: "nothing-checked", SKIPPED: "skipped"}.get(status, "")


def _cell_class(value: str) -> str:
    return {"yes": "yes", "no": "no", "-": "unread"}.get(value, "")


def _table(table: Table) -> Iterator[str]:
    yield f'<div class="scroll"><table id="{_e(table.key)}">'
    if table.caption:
        yield f"<caption>{_e(table.caption)}</caption>"
    yield "<thead><tr>" + "".join(f"<th>{_e(cell)}</th>" for cell in table.header) + "</tr></thead><tbody>"
    for row in table.rows:
        cells = "".join(
            f'<td class="{_cell_class(cell)}">{_e(cell)}</td>' if _cell_class(cell) else f"<td>{_e(cell)}</td>"
            for cell in row
        )
        yield f"<tr>{cells}</tr>"
    yield "</tbody></table></div>"


def _checks(item: Item, depth: int = 0) -> Iterator[str]:
    indent = f' style="padding-left: {0.6 + 1.4 * depth:.1f}em"' if depth else ""
    status = _status_class(item.status)
    yield (
        f'<tr class="check {status}" data-depth="{depth}"><td{indent}>{_e(item.name)}</td>'
        f'<td class="status {status}">{_e(item.status)}</td><td>{_e(item.detail)}</td></tr>'
    )
    for child in item.children:
        yield from _checks(child, depth + 1)


def _seconds(at: float | None) -> str:
    return "" if at is None else f"{at:.1f}"


def render(page: Page) -> str:
    """The page as HTML."""
    status = _status_class(page.status)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{_e(page.title)}: {_e(page.verdict)}</title><style>{STYLE}</style></head><body>",
        f'<header class="verdict {status}" id="verdict" data-verdict="{_e(page.verdict)}">',
        f"<h1>{_e(page.title)}: {_e(page.verdict)}</h1>",
        *(f'<p class="about">{_e(line)}</p>' for line in page.about),
        f"<pre>{_e(page.verdict_line)}</pre></header>",
        '<section id="facts"><h2>What the verdict rests on</h2>',
    ]
    for table in page.facts:
        parts += _table(table)
    parts.append('</section><section id="memory"><h2>Memory over time</h2>')
    if not page.charts:
        parts.append("<p>No step line was kept: nothing to draw.</p>")
    for number, chart in enumerate(page.charts, start=1):
        parts += [
            f'<figure class="memory-chart" id="{_e(chart.key)}" data-steps="{chart.steps}" '
            f'data-kills="{len(chart.kills)}">',
            f"<figcaption>{_e(chart.title)}: {chart.steps} step lines, {len(chart.kills)} OOM kills</figcaption>",
            chart_svg(chart, f"oom-killer-{number}"),
            "</figure>",
        ]
    parts += [
        '</section><section id="timeline"><h2>Timeline</h2>',
        '<table id="timeline-table"><thead><tr><th>s</th><th>what</th><th>where</th><th>detail</th></tr></thead>',
        "<tbody>",
    ]
    for row in page.timeline:
        row_class = f' class="{_status_class(row.status)}"' if row.status else ""
        parts.append(
            f'<tr{row_class} data-what="{_e(row.what)}"><td>{_seconds(row.at)}</td><td>{_e(row.what)}</td>'
            f"<td>{_e(row.where)}</td><td>{_e(row.detail)}</td></tr>"
        )
    parts.append("</tbody></table></section>")
    for table in page.tables:
        parts.append(f'<section id="{_e(table.key)}-section"><h2>{_e(table.title)}</h2>')
        parts += _table(table)
        parts.append("</section>")
    parts += [
        '<section id="checks"><h2>Every check</h2>',
        '<table id="checks-table"><thead><tr><th>check</th><th>status</th><th>detail</th></tr></thead><tbody>',
        *_checks(page.tree),
        "</tbody></table></section></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write(path: Path, page: Page) -> None:
    path.write_text(render(page), encoding="utf-8")
