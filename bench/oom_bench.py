"""How fast the hog reaches the kernel's OOM kill, what it weighs before it starts, what holding costs.

Run as root on Linux (it makes memory cgroups): `make bench`. Prints medians of several runs and the ratios the
project aims for, each against a reference measured in the same run on the same machine:

- time to the OOM kill of a 1 GiB cgroup at MEMORY_INCREMENT_MB=64, INCREMENT_INTERVAL_MS=0, against
  `stress-ng --vm 1 --vm-bytes 2g --vm-keep --oomable` (target: ratio <= 1.0) and against the kernel's own page
  population, one anonymous private mmap with MAP_POPULATE (target: ratio <= 1.25);
- the baseline RSS the start line reports (target: <= 12 MiB);
- CPU seconds spent while holding at a ceiling for 10 s (target: about 0);
- what the kernel's own accounting costs each step: a whole step_line() (its reads of memory.stat, and on v2
  memory.events and memory.pressure, and its formatting) against the usage read alone, timed on a real memory
  cgroup (target: under 1 ms added).
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.memcg import MemoryCgroup  # noqa: E402
from workload import logfmt  # noqa: E402
from workload.cgroup import MemoryCgroup as WorkloadCgroup  # noqa: E402
from workload.main import Counters, step_line  # noqa: E402

LIMIT_MIB = 1024
WORKLOAD = [sys.executable, "-S", "-m", "workload"]
POPULATE = [
    sys.executable,
    "-S",
    "-c",
    "import mmap; mmap.mmap(-1, 2 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)",
]
STRESS_NG = ["stress-ng", "--vm", "1", "--vm-bytes", "2g", "--vm-keep", "--oomable", "--timeout", "120s", "--quiet"]


def time_to_kill(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Seconds from start to exit of command in a fresh 1 GiB cgroup, and its stdout; it must be OOM-killed."""
    group = MemoryCgroup.create(LIMIT_MIB)
    try:
        started = time.perf_counter()
        process = group.popen(command, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        stdout, _ = process.communicate(timeout=300)
        elapsed = time.perf_counter() - started
        if group.oom_kills() < 1:
            raise SystemExit(f"not OOM-killed: {command} exited {process.returncode}")
        return elapsed, stdout
    finally:
        group.remove()


def baseline_rss_mib(stdout: str) -> float:
    start = next(line for line in stdout.splitlines() if line.startswith("event=start "))
    return float(logfmt.parse(start)["baseline_rss_mib"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def holding_cpu(seconds: float) -> float:
    """CPU seconds the hog spends in `seconds` of holding at a ceiling."""
    group = MemoryCgroup.create(LIMIT_MIB)
    env = {"MEMORY_INCREMENT_MB": "64", "INCREMENT_INTERVAL_MS": "0", "MEMORY_CEILING_MB": "256"}
    process = group.popen(WORKLOAD, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("event=holding "):
                break
        before = cpu_seconds(process.pid)
        time.sleep(seconds)
        return cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait(timeout=5)
        group.remove()


def step_read_cost(calls: int) -> tuple[float, float]:
    """Median microseconds of a step line's cgroup reads: (the usage alone, as before; all of them, as now)."""
    group = MemoryCgroup.create(LIMIT_MIB)
    try:
        path = str(group.path)
        cgroup = WorkloadCgroup(group.version, path, LIMIT_MIB << 20, path)
        counters = Counters(cgroup)

        def timed(read: Callable[[], object]) -> float:
            samples = []
            for _ in range(calls):
                began = time.perf_counter()
                read()
                samples.append(time.perf_counter() - began)
            return statistics.median(samples) * 1e6

        usage_only = timed(cgroup.usage_bytes)
        everything = timed(lambda: step_line(1, 64, 64 << 20, cgroup, counters, 0.0))
        return usage_only, everything
    finally:
        group.remove()


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [measure() for _ in range(runs)]
    return statistics.median(samples), samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each timing (median reported)")
    parser.add_argument("--hold-runs", type=int, default=3, help="runs of the 10 s holding measurement")
    args = parser.parse_args()
    if shutil.which("stress-ng") is None:
        raise SystemExit("stress-ng is not installed (Debian: apt-get install stress-ng)")

    env = {"MEMORY_INCREMENT_MB": "64", "INCREMENT_INTERVAL_MS": "0", "TERMINATION_MESSAGE_PATH": ""}
    baselines: list[float] = []

    def workload_run() -> float:
        elapsed, stdout = time_to_kill(WORKLOAD, env)
        baselines.append(baseline_rss_mib(stdout))
        return elapsed

    # This machine is a VM: guest memory the host has not backed yet costs several times more to touch the first
    # time, which would make whichever tool runs first look slow. Touch (and free) more than every run will use,
    # then interleave the tools round by round so any drift left falls on all three alike.
    for _ in range(2):
        warm = mmap.mmap(-1, 4 * LIMIT_MIB << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        warm.close()
    samples: dict[str, list[float]] = {"workload": [], "populate": [], "stress-ng": []}
    for _ in range(args.runs):
        samples["workload"].append(workload_run())
        samples["populate"].append(time_to_kill(POPULATE)[0])
        samples["stress-ng"].append(time_to_kill(STRESS_NG)[0])
    hog_samples, populate_samples, stress_samples = samples["workload"], samples["populate"], samples["stress-ng"]
    hog, populate, stress = (statistics.median(samples[name]) for name in ("workload", "populate", "stress-ng"))
    hold, hold_samples = median_of(args.hold_runs, lambda: holding_cpu(10.0))
    usage_only_us, step_reads_us = step_read_cost(2000)

    def show(samples: list[float]) -> str:
        return " ".join(f"{sample:.3f}" for sample in samples)

    print(f"python: {sys.version.split()[0]} ({sys.executable}), runs: {args.runs}")
    print("time to OOM kill, 1 GiB cgroup, increment 64 MiB, interval 0 (median s; samples)")
    print(f"  workload           {hog:8.3f}   {show(hog_samples)}")
    print(f"  stress-ng --vm     {stress:8.3f}   {show(stress_samples)}")
    print(f"  mmap MAP_POPULATE  {populate:8.3f}   {show(populate_samples)}")
    print(f"  ratio workload/stress-ng  {hog / stress:.2f}  (target <= 1.0)")
    print(f"  ratio workload/populate   {hog / populate:.2f}  (target <= 1.25)")
    print(f"baseline RSS before the first step: {statistics.median(baselines):.1f} MiB median (target <= 12)")
    print(f"CPU while holding at a ceiling for 10 s: {hold:.3f} s median; samples {show(hold_samples)} (target ~0)")
    print(
        f"a step line, its reads and formatting: {step_reads_us:.0f} us median; the usage read alone (before the"
        f" kernel's accounting was added): {usage_only_us:.0f} us; added per step:"
        f" {step_reads_us - usage_only_us:.0f} us (target < 1000 us)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
