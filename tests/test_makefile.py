"""`make up` and `make destroy` as a user runs them, with a stand-in `pulumi` on PATH that notes each call.

The stand-in answers `whoami` as the real CLI does when the chosen backend does not answer (its message on stderr,
exit 1) or when it does; every other command succeeds. Nothing else is on PATH but what the recipes use, so the
CLI's absence is real too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT, require

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
        # A virtualenv that is up to date for `make up`: no pip runs here.
        marker = tmp_path / "venv" / "bin" / ".program-installed"
        marker.parent.mkdir(parents=True)
        marker.touch()
        later = (PROJECT / "requirements.txt").stat().st_mtime + 3600
        os.utime(marker, (later, later))
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


def test_make_up_installs_only_the_programs_requirements(tmp_path: Path) -> None:
    make = shutil.which("make")
    require(make is not None, "make is not installed")
    assert make is not None
    fresh = f"VENV={tmp_path / 'fresh'}"
    planned = subprocess.run(
        [make, "-n", "--no-print-directory", "-C", str(PROJECT), "up", fresh],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet -r requirements.txt" in planned
    assert "requirements-dev.txt" not in planned
    tests = subprocess.run(
        [make, "-n", "--no-print-directory", "-C", str(PROJECT), "lint", fresh],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet -r requirements-dev.txt" in tests
