"""The stop line `make e2e E2E_KEEP=1` prints works from any folder (no cluster needed: it runs in make test)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from tests.e2e.cluster import stop_command


def test_the_printed_stop_command_finds_its_module_from_any_folder(tmp_path: Path) -> None:
    workdir = tmp_path / "oom-killer-e2e.abcd"
    command = stop_command(workdir)
    stop = f" -m tests.e2e.cluster stop {shlex.quote(str(workdir))}"
    assert command.endswith(stop), command
    # Run all of it but the stop itself (which would act on this machine's cgroups), from elsewhere: the module is
    # found, and says how it is used, instead of "No module named 'tests'".
    probe = command.removesuffix(" stop " + shlex.quote(str(workdir)))
    result = subprocess.run(probe, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)  # noqa: S602 (our own line, as a user pastes it)
    assert result.returncode == 2, result.stderr
    assert "usage: " in result.stderr, result.stderr
