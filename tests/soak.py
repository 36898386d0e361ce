"""`make soak`: run every test whose verdict depends on the kernel's accounting or on timing many times, with the
rest of the suite running beside them for load, and say how often each passed.

Groups, each one pytest session with pytest-repeat's `--count=N`, one after another (one heavy thing at a time):

- v1: the kernel's OOM kill on this machine's cgroup v1 (tests/test_kernel_oom.py, tests/test_memory_kinds.py);
- v2: the cgroup v2 kernel in the VM (tests/test_kernel_v2*.py). Their tests judge what one boot reported, so N
  runs are N boots, each of every layout (tests/kernel_vm_fixture.py: repetition k's tests judge boot k);
- container: the container on the Docker engine (tests/test_container_e2e.py, tests/test_container_kinds.py,
  tests/test_demo_engine.py), the image built once per session;
- e2e: the cluster's admission, kill and back-off tests (tests/e2e/test_cluster_oom.py), one cluster for all runs,
  the Deployment scaled to 0 and back before each test so that every run watches a pod from its first start.

Before each test the page cache is dropped (tests/soak_plugin.py). Meanwhile `pytest -m "not e2e"` over the other
test modules runs in a loop, for load. At the end: a table of each test's runs, passes, failures and skips; the
exit status is 1 if anything failed (the load loop's tests too) or a group ran nothing.

Needs what the tests need (root, a Docker engine at DOCKER_HOST with BASE_IMAGE and BASE_IMAGE_TRIXIE, QEMU, Go
for the cluster); with CI set, a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Group:
    name: str
    paths: tuple[str, ...]
    marker: str
    default_runs: int


GROUPS = (
    Group("v1", ("tests/test_kernel_oom.py", "tests/test_memory_kinds.py"), "not e2e", 25),
    Group("v2", ("tests/test_kernel_v2.py", "tests/test_kernel_v2_kinds.py"), "not e2e", 10),
    Group(
        "container",
        ("tests/test_container_e2e.py", "tests/test_container_kinds.py", "tests/test_demo_engine.py"),
        "not e2e",
        25,
    ),
    Group("e2e", ("tests/e2e/test_cluster_oom.py",), "e2e", 10),
)
BY_NAME = {group.name: group for group in GROUPS}


@dataclass
class Tally:
    runs: int = 0
    passes: int = 0
    failures: int = 0
    skips: int = 0


@dataclass
class Outcome:
    """What a pytest session's JUnit XML says, per test (the repetition's suffix taken off)."""

    tests: dict[str, Tally] = field(default_factory=dict)

    def add(self, test: str, status: str) -> None:
        tally = self.tests.setdefault(test, Tally())
        tally.runs += 1
        if status == "passed":
            tally.passes += 1
        elif status == "skipped":
            tally.skips += 1
        else:
            tally.failures += 1

    @property
    def failures(self) -> int:
        return sum(tally.failures for tally in self.tests.values())

    @property
    def passes(self) -> int:
        return sum(tally.passes for tally in self.tests.values())


def without_repetition(name: str, count: int) -> str:
    """`test_x[flat-3-10]` -> `test_x[flat]`, `test_x[3-10]` -> `test_x`: pytest-repeat's id is `<k>-<count>`, last."""
    if count <= 1:
        return name
    stripped = re.sub(rf"-?\b\d+-{count}\]$", "]", name)
    return stripped.removesuffix("[]")


def read_junit(path: Path, count: int, outcome: Outcome) -> None:
    """Add each test case of a JUnit XML file (pytest's) to the outcome: failed if it failed or erred anywhere."""
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314 (the file pytest just wrote here)
        module = case.get("classname", "")
        test = f"{module}::{without_repetition(case.get('name', '?'), count)}"
        if case.find("failure") is not None or case.find("error") is not None:
            status = "failed"
        elif case.find("skipped") is not None:
            status = "skipped"
        else:
            status = "passed"
        outcome.add(test, status)


def pytest_command(paths: Sequence[str], marker: str, junit: Path, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        marker,
        "-p",
        "no:cacheprovider",  # two sessions run at once: neither writes .pytest_cache
        f"--junitxml={junit}",
        *extra,
        *paths,
    ]


def run_group(group: Group, runs: int, out: Path, env: dict[str, str]) -> tuple[Outcome, int, float]:
    """One pytest session of the group's tests, each `runs` times; its outcome, exit status and seconds."""
    started = time.monotonic()
    log = out / f"{group.name}.log"
    junit = out / f"{group.name}.xml"
    print(f"soak: {group.name}: {runs} runs of {' '.join(group.paths)} (log {log})", flush=True)
    if group.name == "e2e":
        # As make e2e does: the cluster's binaries built (or found cached) before the session starts the cluster.
        with log.open("a") as output:
            built = subprocess.run(
                ["bash", "tests/e2e/builds/build.sh"], cwd=PROJECT, env=env, stdout=output, stderr=output, check=False
            )
        if built.returncode != 0:
            return Outcome(), built.returncode, time.monotonic() - started
    command = pytest_command(group.paths, group.marker, junit, ["-p", "tests.soak_plugin", f"--count={runs}", "-q"])
    with log.open("a") as output:
        done = subprocess.run(command, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT, check=False)
    outcome = Outcome()
    if junit.exists():
        read_junit(junit, runs, outcome)
    seconds = time.monotonic() - started
    print(
        f"soak: {group.name}: pytest exited {done.returncode} after {seconds:.0f}s, "
        f"{outcome.passes} passed, {outcome.failures} failed",
        flush=True,
    )
    return outcome, done.returncode, seconds


class LoadLoop:
    """`pytest -m "not e2e"` over the modules no group runs, again and again until stopped, in the background."""

    def __init__(self, paths: Sequence[str], out: Path, env: dict[str, str]) -> None:
        self.paths, self.out, self.env = list(paths), out, env
        self.outcome = Outcome()
        self.rounds = 0
        self.failed_rounds = 0
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="soak-load", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        with (self.out / "load.log").open("a") as output:
            while not self.stopping.is_set():
                junit = self.out / f"load-{self.rounds + 1}.xml"
                command = pytest_command(self.paths, "not e2e", junit, ["-q"])
                with self.lock:
                    if self.stopping.is_set():
                        return
                    # A session of its own, so that stopping it stops what it started too.
                    self.process = subprocess.Popen(
                        command,
                        cwd=PROJECT,
                        env=self.env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                returncode = self.process.wait()
                if self.stopping.is_set():
                    return  # cut short: this round's results are incomplete, and not counted
                self.rounds += 1
                if returncode != 0:
                    self.failed_rounds += 1
                if junit.exists():
                    read_junit(junit, 1, self.outcome)
                    junit.unlink()

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the group of the session we started, by its id
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.thread.join()


def load_paths() -> list[str]:
    """Every test module of the main suite that no group runs (tests/e2e/ is the cluster's: not load)."""
    soaked = {path for group in GROUPS for path in group.paths}
    return [
        str(path.relative_to(PROJECT))
        for path in sorted((PROJECT / "tests").glob("test_*.py"))
        if str(path.relative_to(PROJECT)) not in soaked
    ]


def table(rows: Sequence[tuple[str, Tally]]) -> str:
    header = ("test", "runs", "passes", "failures", "skips")
    cells = [header, *[(test, str(t.runs), str(t.passes), str(t.failures), str(t.skips)) for test, t in rows]]
    width = max(len(row[0]) for row in cells)
    lines = [f"{row[0]:<{width}}  {row[1]:>5}  {row[2]:>6}  {row[3]:>8}  {row[4]:>5}" for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    for group in GROUPS:
        parser.add_argument(
            f"--runs-{group.name}",
            type=int,
            default=group.default_runs,
            metavar="N",
            help=f"runs of each {group.name} test (default {group.default_runs})",
        )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GROUP",
        help=f"run only this group ({', '.join(BY_NAME)}); repeat it, or separate with commas, for several",
    )
    parser.add_argument("--no-load", action="store_true", help="run the groups alone, without the load loop")
    parser.add_argument("--out", type=Path, help="where the logs and JUnit files go (default: a new temporary folder)")
    arguments = parser.parse_args(argv)
    only = [name for value in arguments.only for name in value.split(",") if name]
    unknown = sorted(set(only) - set(BY_NAME))
    if unknown:
        parser.error(f"--only: no group {', '.join(unknown)} (groups: {', '.join(BY_NAME)})")
    for group in GROUPS:
        if getattr(arguments, f"runs_{group.name}") < 1:
            parser.error(f"--runs-{group.name} must be at least 1")
    arguments.groups = [group for group in GROUPS if not only or group.name in only]
    return arguments


def main(argv: Sequence[str]) -> int:
    arguments = parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root: it drops the page cache before each test (and the kernel tests make cgroups)")
        return 2
    out = arguments.out or Path(tempfile.mkdtemp(prefix="oom-killer-soak."))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OOM_KILLER_SOAK": "1"}
    print(f"soak: logs and JUnit XML in {out}", flush=True)
    started = time.monotonic()
    load = None if arguments.no_load else LoadLoop(load_paths(), out, env)
    results: list[tuple[Group, Outcome, int, float]] = []
    try:
        if load:
            load.start()
        for group in arguments.groups:
            runs = getattr(arguments, f"runs_{group.name}")
            results.append((group, *run_group(group, runs, out, env)))
    finally:
        if load:
            load.stop()

    failed = False
    for group, outcome, returncode, seconds in results:
        print(f"\n{group.name} ({seconds:.0f}s, pytest exit {returncode}):")
        if outcome.tests:
            print(table(sorted(outcome.tests.items())))
        else:
            print(f"no test ran: see {out / (group.name + '.log')}")
        if outcome.failures or returncode != 0 or not outcome.passes:
            failed = True  # a failure, an error pytest reports outside any test, or nothing that passed at all
    if load:
        flaky = sorted((test, tally) for test, tally in load.outcome.tests.items() if tally.failures)
        print(
            f"\nload: {load.rounds} full rounds of {len(load.paths)} modules beside the groups, "
            f"{load.failed_rounds} with a failure (log {out / 'load.log'})"
        )
        if flaky:
            print(table(flaky))
        failed = failed or load.failed_rounds > 0
    print(f"\nsoak: {'FAILED' if failed else 'passed'} in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
