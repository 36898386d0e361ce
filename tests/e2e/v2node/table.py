"""What the runs found, as markdown: the seconds of each stage per run (from the marks), one line per run with its
verdict and QEMU's RSS, and where the time between the kubelet's start and the kill went (from the agents' own log
timestamps).

Stage durations use the guest's clock (`/proc/uptime`, stamped by the guest) so that a load spike on the host
does not move them; the host stamps each mark too, which gives QEMU's start to the guest clock's start (firmware
and decompressing the kernel) and the whole run as a person waits for it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

# (label, from mark, to mark): seconds between two guest marks; "boot" is the guest's uptime 0.
STAGES = (
    ("kernel boot + initrd unpack, to /init", "boot", "init"),
    ("modules, network, folders", "init", "network_ready"),
    ("copy the seeded containerd root + cert (--seed host)", "network_ready", "images_seeded"),
    ("containerd start to ready (ctr version)", "containerd_started", "containerd_ready"),
    ("ctr import pause image", "containerd_ready", "pause_imported"),
    ("ctr import hog image", "pause_imported", "hog_imported"),
    ("kubelet start to /healthz ok", "kubelet_started", "kubelet_healthz"),
    ("kubelet start to hog cgroup created", "kubelet_started", "hog_cgroup_created"),
    ("kubelet start to /pods says running", "kubelet_started", "kubelet_reports_running"),
    ("kubelet start to hog's start line in pod log", "kubelet_started", "hog_start_line_logged"),
    ("hog start line to oom_kill in its cgroup", "hog_start_line_logged", "oom_kill_in_container_cgroup"),
    ("oom_kill to /pods says terminated", "oom_kill_in_container_cgroup", "kubelet_reports_terminated"),
    ("boot to kubelet says OOMKilled (guest clock)", "boot", "kubelet_reports_terminated"),
)
VERDICT = "kubelet_reports_terminated"
KLOG = re.compile(r"^[IEW]\d{4} (\d\d:\d\d:\d\d\.\d+)")
CONTAINERD_LOG = re.compile(r'time="[\d-]+T(\d\d:\d\d:\d\d\.\d+)Z"')


def summaries(runs: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """(run name, summary.json) of each run that wrote one."""
    return [
        (run.name, json.loads((run / "summary.json").read_text())) for run in runs if (run / "summary.json").exists()
    ]


def oom_killed(summary: dict[str, Any]) -> bool:
    """The run's verdict: the kubelet reported the hog's container OOMKilled with exit code 137."""
    extra = str(summary["marks"].get(VERDICT, {}).get("extra", ""))
    return "reason=OOMKilled" in extra.split() and "exitCode=137" in extra.split()


def stage_column(summary: dict[str, Any]) -> list[str]:
    marks = {name: float(value["guest"]) for name, value in summary["marks"].items()}
    marks["boot"] = 0.0
    column = [
        f"{marks[end] - marks[start]:.1f}" if start in marks and end in marks else "-" for _, start, end in STAGES
    ]
    offsets = [value["host"] - value["guest"] for value in summary["marks"].values()]
    column.insert(0, f"{min(offsets):.1f}" if offsets else "-")
    verdict = summary["marks"].get(VERDICT, {}).get("host")
    column.append("-" if verdict is None else f"**{verdict:.1f}**")
    column.append(f"{summary['wall_seconds']:.1f}")
    column.append(str(summary["qemu_rss_peak_mib"]))
    column.append(f"{summary['load_average_before'][0]:.1f}")
    return column


def stage_table(runs: list[Path]) -> str:
    found = summaries(runs)
    labels = [
        "QEMU start to guest clock start (host clock)",
        *(label for label, _, _ in STAGES),
        "**QEMU start to kubelet says OOMKilled (host clock)**",
        "QEMU wall, start to exit (includes the log dump)",
        "QEMU RSS peak (MiB)",
        "host load average at start (1 min)",
    ]
    columns = [stage_column(summary) for _, summary in found]
    lines = [
        "| stage (s) | " + " | ".join(f"run {name}" for name, _ in found) + " |",
        "| --- | " + " | ".join("---:" for _ in found) + " |",
        "| variant | "
        + " | ".join(f"{summary['label']}, cpu {summary['cpu']}, -m {summary['memory_mib']}" for _, summary in found)
        + " |",
    ]
    lines += [
        f"| {label} | " + " | ".join(column[row] for column in columns) + " |" for row, label in enumerate(labels)
    ]
    lines.append("")
    for name, summary in found:
        verdict = summary["marks"].get(VERDICT, {}).get("extra") or "no terminated status"
        kill = summary["marks"].get("oom_kill_in_container_cgroup", {}).get("extra") or "no oom_kill"
        lines.append(f"- run {name}: kubelet {verdict}; container's cgroup {kill}; timed out: {summary['timed_out']}")
    return "\n".join(lines)


def seconds_of(stamp: str) -> float:
    moment = datetime.strptime(stamp[:15], "%H:%M:%S.%f")  # a time of day (the guest runs on UTC)
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def first(lines: list[str], pattern: str, stamp: re.Pattern[str]) -> float | None:
    """The time stamp of the first line that matches, in seconds of the day."""
    for line in lines:
        if re.search(pattern, line):
            found = stamp.search(line)
            if found:
                return seconds_of(found.group(1))
    return None


def breakdown_column(run: Path) -> dict[str, float | None] | None:
    """Seconds after the kubelet's first log line of each step to the kill, or None without the agents' logs."""
    logs = (run / "logs.txt").read_text(errors="replace") if (run / "logs.txt").exists() else ""
    if "=== kubelet.log" not in logs:
        return None
    containerd_text, kubelet_text = logs.split("=== kubelet.log", 1)
    containerd, kubelet = containerd_text.splitlines(), kubelet_text.splitlines()
    results = (run / "results.txt").read_text(errors="replace").splitlines()
    result: dict[str, Any] = next(
        (json.loads(line[len("RESULT ") :]) for line in results if line.startswith("RESULT ")), {}
    )
    start_line = next((line for line in result.get("pod_log", []) if "event=start" in line), "")
    # The pod log's lines start with the runtime's RFC 3339 time (after the log file's name, which watch.py adds).
    hog_start = seconds_of(start_line.split()[1].split("T")[1]) if start_line else None
    points = {
        "kubelet first log line": first(kubelet, r"^I\d{4}", KLOG),
        "version (after its TLS setup)": first(kubelet, r'"Kubelet version"', KLOG),
        "main sync loop": first(kubelet, r"Starting kubelet main sync loop", KLOG),
        "RunPodSandbox called": first(containerd, r"RunPodSandbox for name", CONTAINERD_LOG),
        "sandbox returned": first(containerd, r"RunPodSandbox for name.*returns sandbox id", CONTAINERD_LOG),
        "CreateContainer called": first(
            containerd, r'CreateContainer within sandbox .* for container name:\\"hog\\"', CONTAINERD_LOG
        ),
        "StartContainer returned": first(containerd, r"StartContainer for .* returns successfully", CONTAINERD_LOG),
        "hog start line": hog_start,
        "containerd TaskOOM": first(containerd, r"TaskOOM event", CONTAINERD_LOG),
        "containerd exit 137": first(containerd, r"exit_status:137", CONTAINERD_LOG),
        "kubelet PLEG exitCode=137": first(kubelet, r"container finished.*exitCode=137", KLOG),
    }
    base = points["kubelet first log line"]
    return {name: None if value is None or base is None else value - base for name, value in points.items()}


def breakdown_table(runs: list[Path]) -> str:
    columns = [(run.name, column) for run in runs if (column := breakdown_column(run)) is not None]
    if not columns:
        return "(no run left the agents' logs)"
    lines = [
        "| seconds after the kubelet's first log line | " + " | ".join(f"run {name}" for name, _ in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for step in columns[0][1]:
        cells = ["-" if column[step] is None else f"{column[step]:.1f}" for _, column in columns]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
