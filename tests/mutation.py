"""make mutation: would the tests catch a wrong verdict or a wrong prediction? mutmut plants one fault at a time in
each judge and prediction (a comparison flipped, a constant moved, a `not` dropped, an `and` made `or`...) and runs
the tests that exercise the module against it; a mutant the tests let through "survives".

Each module runs in a copy of this checkout of its own (mutmut writes its mutants into `mutants/` beside the
sources), with only the tests that exercise it, and prints its score and every survivor with its diff. Exit 1 if
any module's score is under the floor. Not part of make test (it takes minutes a module); docs/development.md
lists the survivors left and why each is equivalent.

    venv/bin/python -m tests.mutation [--module PATH ...] [--floor 90] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).parent / "mutmut"
FLOOR = 90.0  # percent of the mutants each module's tests must kill (issue 28)


@dataclass(frozen=True)
class Target:
    module: str  # the file mutated, from the project's root
    tests: tuple[str, ...]  # the tests that exercise it, the only ones run against its mutants


TARGETS = (
    Target(
        "oomtools/verify/judge.py",
        ("tests/test_verify.py", "tests/test_verify_judge.py", "tests/test_verify_golden.py"),
    ),
    Target("oomtools/verify/detectors.py", ("tests/test_verify_detectors.py",)),
    Target("oomtools/verify/fleet.py", ("tests/test_verify_fleet.py",)),
    Target(
        "oomtools/verdict.py",
        ("tests/test_verdict.py", "tests/test_demo.py", "tests/test_verify_judge.py", "tests/test_verify_golden.py"),
    ),
    Target(
        "workload/predict.py",
        (
            "tests/test_workload_steps.py",
            "tests/test_program.py",
            "tests/test_program_limit_scope.py",
            "tests/test_verify.py",
        ),
    ),
    Target(
        "infra/table.py",
        (
            "tests/test_settings.py",
            "tests/test_settings_table.py",
            "tests/test_demo.py",
            "tests/test_program_vpa.py",  # the rules of vpa, vpaMaxMb and a ceiling with a VPA
            "tests/test_program_request.py",  # memoryRequestMb's
        ),
    ),
    Target("oomtools/resize/predict.py", ("tests/test_resize.py",)),
    Target("oomtools/verify/vpa.py", ("tests/test_verify_vpa.py",)),
    Target(
        "oomtools/verify/prediction.py",
        (
            "tests/test_verify.py",
            "tests/test_verify_judge.py",
            "tests/test_verify_fleet.py",
            "tests/test_verify_golden.py",
            "tests/test_verify_report.py",
        ),
    ),
)

# What the copy leaves out: the virtualenvs (linked instead), git's and the tools' own state.
LEFT_OUT = {".git", "venv", "venv-checkov", "mutants", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}


@dataclass
class Score:
    module: str
    killed: int
    survived: list[str]
    other: dict[str, int]  # timeouts, suspicious, no tests: counted against the score, named in the report
    seconds: float

    @property
    def total(self) -> int:
        return self.killed + len(self.survived) + sum(self.other.values())

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 0.0


def copy_checkout(into: Path) -> None:
    """This checkout's files (committed or not), as the tests see them, without the virtualenvs' contents."""
    for entry in PROJECT.iterdir():
        if entry.name in LEFT_OUT or (entry.name.startswith(".") and entry.name != ".dockerignore"):
            continue
        target = into / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, target)
    (into / "venv").symlink_to(PROJECT / "venv")


def config(target: Target, copied: Path) -> str:
    """mutmut's section of setup.cfg for one module: its package, the module alone, its tests, the rest copied."""
    package = target.module.split("/")[0] + "/"
    also = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in copied.iterdir() if entry.name != "venv")
    lines = [
        "[mutmut]",
        f"source_paths={package}",
        f"only_mutate={target.module}",
        "pytest_add_cli_args_test_selection=" + "\n\t".join(target.tests),
        # No cache of earlier runs, no stopping at the first failure (pyproject's addopts say -x for make test).
        "pytest_add_cli_args=-p\n\tno:cacheprovider\n\t--hypothesis-profile=mutation",
        "also_copy=" + "\n\t".join(also),
        # Each mutant's tests run in a process forked from a server that has only collected them: forked straight
        # from mutmut's own process, which ran the suite once for its timings, every test that renders the program
        # under Pulumi's mocks hung (grpc's and asyncio's threads do not survive a fork) and counted as a timeout.
        "process_isolation=forkserver",
    ]
    return "\n".join(lines) + "\n"


def results(copied: Path) -> tuple[int, list[str], dict[str, int]]:
    """(killed, survivors' names, the other outcomes counted) from `mutmut results --all true`."""
    listed = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"], cwd=copied, capture_output=True, text=True, check=True
    ).stdout
    killed, survived, other = 0, [], dict[str, int]()
    for line in listed.splitlines():
        name, _, status = (part.strip() for part in line.rpartition(":"))
        if not name:
            continue
        if status == "killed":
            killed += 1
        elif status == "survived":
            survived.append(name)
        else:
            other[status] = other.get(status, 0) + 1
    return killed, survived, other


def run(target: Target, workdir: Path) -> Score:
    copied = workdir / target.module.replace("/", "_")
    copied.mkdir()
    copy_checkout(copied)
    (copied / "setup.cfg").write_text(config(target, copied))
    started = time.monotonic()
    done = subprocess.run(
        [str(MUTMUT), "run", "--max-children", str(os.cpu_count() or 1)],
        cwd=copied,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"mutation: mutmut failed on {target.module} (exit {done.returncode})")
    killed, survived, other = results(copied)
    return Score(target.module, killed, survived, other, time.monotonic() - started)


def show(name: str, copied: Path) -> str:
    return subprocess.run(
        [str(MUTMUT), "show", name], cwd=copied, capture_output=True, text=True, check=False
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="only this module (repeatable; default: every target)")
    parser.add_argument("--floor", type=float, default=FLOOR, help="the least percent killed a module may have")
    parser.add_argument("--keep", type=Path, help="work in this folder and leave it (to look at mutants after)")
    args = parser.parse_args(argv)
    targets = [t for t in TARGETS if not args.module or t.module in args.module]
    unknown = set(args.module or ()) - {t.module for t in TARGETS}
    if unknown:
        parser.error(f"not a target: {', '.join(sorted(unknown))} (they are {', '.join(t.module for t in TARGETS)})")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="oom-killer-mutation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scores = []
    try:
        for target in targets:
            score = run(target, workdir)
            scores.append(score)
            print(
                f"mutation module={score.module} killed={score.killed} total={score.total} "
                f"score={score.percent:.1f} survived={len(score.survived)} "
                + "".join(f"{status.replace(' ', '_')}={count} " for status, count in sorted(score.other.items()))
                + f"seconds={score.seconds:.0f}",
                flush=True,
            )
            copied = workdir / target.module.replace("/", "_")
            for name in score.survived:
                print(f"  survived {name}\n" + "\n".join(f"    {line}" for line in show(name, copied).splitlines()))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'module':<32} {'killed':>6} {'total':>6} {'score':>6}")
    for score in scores:
        print(f"{score.module:<32} {score.killed:>6} {score.total:>6} {score.percent:>5.1f}%")
    below = [score.module for score in scores if score.percent < args.floor]
    if below:
        print(f"mutation: under {args.floor:g}%: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
