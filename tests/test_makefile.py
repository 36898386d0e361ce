"""`make up` and `make destroy` as a user runs them, with a stand-in `pulumi` on PATH that notes each call.

The stand-in answers `whoami` as the real CLI does when the chosen backend does not answer (its message on stderr,
exit 1) or when it does; every other command succeeds. Nothing else is on PATH but what the recipes use, so the
CLI's absence is real too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import PROJECT, kubeconfig_nobody_answers, require

OOM_KILLER = Path(sys.executable).parent / "oom-killer"  # the command this virtualenv has installed
TOOLS_PREREQUISITES = ("requirements.txt", "requirements-tools.txt", "pyproject.toml")
EXPIRED = "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions"
STAND_IN = """#!/bin/sh
echo "$*" >> "$PULUMI_CALLS"
if [ "$1" = whoami ] && [ -n "$WHOAMI_ERROR" ]; then echo "$WHOAMI_ERROR" >&2; exit 1; fi
exit 0
"""


@dataclass
class Made:
    returncode: int
    stderr: str
    calls: list[str]


class MakeRunner:
    """Runs a make target in the project with only the stand-in (or no) `pulumi` and `sh` on PATH."""

    def __init__(self, make: str, tmp_path: Path) -> None:
        self.make, self.tmp_path = make, tmp_path
        self.tools = tmp_path / "bin"
        self.tools.mkdir()
        for tool in ("sh",):
            found = shutil.which(tool)
            assert found is not None, tool
            (self.tools / tool).symlink_to(found)
        # A virtualenv that is up to date for `make up`, `make demo` and `make verify`: no pip runs here. Its
        # oom-killer is the project's own virtualenv's (the command pip installed there).
        bin_dir = tmp_path / "venv" / "bin"
        bin_dir.mkdir(parents=True)
        later = max((PROJECT / name).stat().st_mtime for name in TOOLS_PREREQUISITES) + 3600
        for stamp in (".program-installed", ".tools-installed"):
            (bin_dir / stamp).touch()
            os.utime(bin_dir / stamp, (later, later))
        (bin_dir / "oom-killer").symlink_to(OOM_KILLER)
        self.home = tmp_path / "home"
        self.home.mkdir()

    def __call__(
        self, target: str, *args: str, pulumi: bool = True, whoami_error: str = "", env: dict[str, str] | None = None
    ) -> Made:
        if pulumi:
            stand_in = self.tools / "pulumi"
            stand_in.write_text(STAND_IN)
            stand_in.chmod(0o755)
        calls = self.tmp_path / "calls"
        calls.write_text("")
        environment = {
            "PATH": str(self.tools),
            "HOME": str(self.home),
            "PULUMI_CALLS": str(calls),
            "WHOAMI_ERROR": whoami_error,
            **(env or {}),
        }
        done = subprocess.run(
            [self.make, "--no-print-directory", "-C", str(PROJECT), target, f"VENV={self.tmp_path / 'venv'}", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Made(done.returncode, done.stderr, calls.read_text().splitlines())


@pytest.fixture
def run_make(tmp_path: Path) -> MakeRunner:
    make = shutil.which("make")
    require(make is not None, "make is not installed")
    assert make is not None
    return MakeRunner(make, tmp_path)


def chosen_backend(home: Path, url: str) -> None:
    """What `pulumi login <url>` leaves behind."""
    (home / ".pulumi").mkdir(exist_ok=True)
    (home / ".pulumi" / "credentials.json").write_text(json.dumps({"current": url, "accessTokens": {url: "x"}}))


def test_make_up_logs_in_locally_where_no_backend_was_ever_chosen(run_make: MakeRunner) -> None:
    made = run_make("up")
    assert made.returncode == 0, made.stderr
    assert made.calls == ["login --local", "stack select --create dev", "up --stack dev"]


def test_make_up_stops_with_pulumis_message_where_the_chosen_backend_does_not_answer(run_make: MakeRunner) -> None:
    chosen_backend(run_make.home, "https://api.pulumi.com")
    made = run_make("up", whoami_error=EXPIRED)
    assert made.returncode != 0
    assert made.calls == ["whoami --non-interactive"]  # no login --local, no stack made anywhere
    lines = made.stderr.splitlines()
    assert EXPIRED in lines
    assert any(line.startswith("make up: the Pulumi backend you chose does not answer") for line in lines)
    assert "pulumi login --local" in made.stderr


def test_make_up_uses_the_chosen_backend_that_answers(run_make: MakeRunner) -> None:
    chosen_backend(run_make.home, "s3://acme-pulumi-state")
    made = run_make("up", "STACK=staging")
    assert made.returncode == 0, made.stderr
    assert made.calls == ["whoami --non-interactive", "stack select --create staging", "up --stack staging"]


def test_make_up_takes_pulumi_backend_url_as_a_choice(run_make: MakeRunner) -> None:
    made = run_make("up", whoami_error=EXPIRED, env={"PULUMI_BACKEND_URL": "https://api.pulumi.com"})
    assert made.returncode != 0
    assert made.calls == ["whoami --non-interactive"]


@pytest.mark.parametrize("target", ["up", "destroy"])
def test_without_the_cli_make_says_where_to_get_it(target: str, run_make: MakeRunner) -> None:
    made = run_make(target, pulumi=False)
    assert made.returncode != 0
    assert f"make {target} needs the Pulumi CLI: https://www.pulumi.com/docs/install/" in made.stderr.splitlines()
    assert "No such file" not in made.stderr


def test_make_destroy_destroys_the_stack_named(run_make: MakeRunner) -> None:
    made = run_make("destroy", "STACK=staging")
    assert made.returncode == 0, made.stderr
    assert made.calls == ["destroy --stack staging"]


def planned(target: str, venv: Path) -> str:
    """What make would run for a target with a virtualenv that does not exist yet (make -n runs nothing)."""
    make = shutil.which("make")
    require(make is not None, "make is not installed")
    assert make is not None
    return subprocess.run(
        [make, "-n", "--no-print-directory", "-C", str(PROJECT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_up_installs_only_the_programs_requirements_after_checking_for_the_cli(tmp_path: Path) -> None:
    plan = planned("up", tmp_path / "fresh")
    assert "pip install --quiet -r requirements.txt" in plan
    assert "requirements-dev.txt" not in plan
    assert "-e ." not in plan
    assert plan.index("command -v pulumi") < plan.index("-m venv") < plan.index("pulumi stack select")
    lint = planned("lint", tmp_path / "fresh")
    assert "pip install --quiet -r requirements-dev.txt" in lint
    assert "pip install --quiet -e ." in lint


@pytest.mark.parametrize("target", ["demo", "verify"])
def test_make_demo_and_verify_install_only_the_tools_and_run_the_command(target: str, tmp_path: Path) -> None:
    # Not the test toolchain (pytest, mypy, ruff, hadolint, ...): the project, editable, with its dependencies
    # (the program's requirements and what the tools import).
    plan = planned(target, tmp_path / "fresh")
    assert "pip install --quiet -e ." in plan
    # setuptools' ten-line notice on editable installs, and only it, is kept off a newcomer's first screen
    assert "PYTHONWARNINGS=ignore::UserWarning:setuptools.command.editable_wheel " in plan
    assert "requirements-dev.txt" not in plan
    assert plan.splitlines()[-1].startswith(f"{tmp_path / 'fresh'}/bin/oom-killer {target} --stack dev")


def test_make_up_without_the_cli_stops_before_installing_anything(run_make: MakeRunner) -> None:
    # The make up made the virtualenv and installed the program's requirements, then said the CLI was missing.
    fresh = run_make.tmp_path / "fresh"
    made = run_make("up", f"VENV={fresh}", pulumi=False)
    assert made.returncode != 0
    assert "make up needs the Pulumi CLI: https://www.pulumi.com/docs/install/" in made.stderr.splitlines()
    assert not fresh.exists()  # no virtualenv made, no pip run (python3 is not even on this PATH)
    assert "python3" not in made.stderr


def test_make_shows_the_commands_own_exit_code_and_exits_2(run_make: MakeRunner) -> None:
    # make's own exit code is 2 on any failure; the command's code is in make's message (the command carries it).
    require(OOM_KILLER.exists(), f"no {OOM_KILLER}: venv/bin/pip install --no-deps -e .")
    made = run_make("demo", "ARGS=--set replicas=0")
    assert made.returncode == 2
    assert "demo: replicas=0: the dev stack declares no pod, so nothing would run" in made.stderr
    assert re.search(r"\[Makefile:\d+: demo\] Error 6$", made.stderr, re.MULTILINE), made.stderr
    outputs = run_make.tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"namespace": "oom-killer", "deploymentName": "oom-killer"}))
    kubeconfig, server = kubeconfig_nobody_answers(run_make.tmp_path)
    made = run_make("verify", f"ARGS=--outputs {outputs} --kubeconfig {kubeconfig} --timeout 1s")
    assert made.returncode == 2
    assert f"verify: the cluster at {server} does not answer: Connection refused" in made.stderr
    assert re.search(r"\[Makefile:\d+: verify\] Error 3$", made.stderr, re.MULTILINE), made.stderr
