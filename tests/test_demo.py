"""`make demo` before it reaches a Docker engine: every refusal is one line on stderr and an exit code of its own.

The failures that need an engine (the base image, the runtime's own refusal, a prebuilt local image) are tested in
test_demo_engine.py, on a real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oomtools import demo
from oomtools.render import stack_file


def one_line_failure(capsys: pytest.CaptureFixture[str]) -> str:
    """The single line the demo printed on stderr; nothing on stdout, no traceback."""
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("demo: ")
    return lines[0]


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A DOCKER_HOST where nothing answers: a test that gets past the config stops at the engine, with exit 3."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "foo"], "demo: --set takes key=value, got 'foo'"),
        (["--set", "=1"], "demo: --set takes key=value, got '=1'"),
        (["--bogus"], "demo: unrecognized arguments: --bogus (see --help)"),
        (["--stack", "../etc"], "demo: --stack '../etc': a stack name is letters, digits, '-', '_' and '.'"),
    ],
)
def test_bad_arguments_exit_2_in_one_line(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(argv) == demo.EXIT_BAD_CONFIG == 2
    assert one_line_failure(capsys) == expected


@pytest.mark.parametrize(
    ("overrides", "starts"),
    [
        # The typo ran with the dev stack's 16 MiB steps and exit 0.
        (["memoryIncremntMb=30"], "demo: invalid config oom-killer:memoryIncremntMb='30': is not a setting"),
        # 20 MiB with the dev stack's 16 MiB steps was killed before its first step.
        (["memoryLimitMb=20"], "demo: invalid config oom-killer:memoryIncrementMb=16: must be at most 4"),
        # Docker refuses a limit under 6 MiB with an APIError; the settings refuse it first.
        (["memoryLimitMb=4", "memoryIncrementMb=1"], "demo: invalid config oom-killer:memoryLimitMb=4: must be from"),
        (["memoryCeilingMb=120"], "demo: invalid config oom-killer:memoryCeilingMb=120: must be 0 (no ceiling) or"),
    ],
)
def test_a_bad_config_exits_2_in_one_line_naming_key_and_value(
    overrides: list[str], starts: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [arg for pair in overrides for arg in ("--set", pair)]
    assert demo.main(argv) == demo.EXIT_BAD_CONFIG
    assert one_line_failure(capsys).startswith(starts)


def test_replicas_0_says_nothing_would_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--set", "replicas=0"]) == demo.EXIT_NOTHING_TO_RUN == 6
    assert one_line_failure(capsys) == (
        "demo: replicas=0: the dev stack declares no pod, so nothing would run (and nothing be OOM-killed)"
    )


@pytest.mark.usefixtures("no_engine")
def test_a_stack_without_a_file_runs_on_the_project_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert not stack_file("rehearsal-without-file").exists()
    assert demo.main(["--stack", "rehearsal-without-file"]) == demo.EXIT_NO_ENGINE == 3  # it got as far as the engine
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "demo: there is no Pulumi.rehearsal-without-file.yaml: the rehearsal-without-file stack runs on the "
        "project's defaults, "
        "as `pulumi up` would run a new stack"
    )
    assert len(lines) == 2
    assert lines[1].startswith("demo: no Docker engine answers (DOCKER_HOST or the default socket): ")


@pytest.mark.usefixtures("no_engine")
def test_no_engine_is_exit_3_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([]) == demo.EXIT_NO_ENGINE
    assert one_line_failure(capsys).startswith("demo: no Docker engine answers")


def test_every_exit_code_is_distinct() -> None:
    codes = {name: value for name, value in vars(demo).items() if name.startswith("EXIT_")}
    assert len(set(codes.values())) == len(codes) == 8


# The verdict's own judgement, on the lines a run printed.


def hog_run(steps: int, earliest: int, latest: int) -> list[dict[str, str]]:
    start = {
        "event": "start",
        "interval_ms": "0",
        "predicted_steps_earliest": str(earliest),
        "predicted_steps": str(latest),
        "predicted_steps_latest": str(latest),
    }
    return [start, *({"event": "step", "step": str(n)} for n in range(1, steps + 1))]


def test_a_kill_inside_the_announced_steps_is_as_predicted_and_says_where() -> None:
    on_time, fields = demo.kill_fields(hog_run(13, 13, 16), container_killed=True)
    assert on_time
    assert fields == {"killed_in_step": "14", "announced_steps": "13..16", "where": "2/4"}


@pytest.mark.parametrize(("steps", "where"), [(10, "early"), (16, "late")])
def test_a_kill_outside_the_announced_steps_is_not_as_predicted(steps: int, where: str) -> None:
    on_time, fields = demo.kill_fields(hog_run(steps, 13, 16), container_killed=True)
    assert not on_time
    assert fields["where"] == where


def test_a_supervised_worker_that_exited_on_its_own_is_not_a_worker_kill() -> None:
    supervisor = {"event": "supervisor_start", "oom_group": "0"}
    exited = {"event": "child_exit", "exit_code": "1", "oom_kill": "0"}
    stopped = {"event": "stop", "children": "1", "stopped_worker": "none"}
    verdict = demo.verdict_of("anonymous", "supervised", [supervisor, *hog_run(3, 12, 12), exited, stopped], 0)
    assert verdict is not None
    assert verdict[:2] == ("ended-otherwise", "worker-killed")
    killed = {"event": "child_exit", "signal": "SIGKILL", "oom_kill": "1"}
    verdict = demo.verdict_of("anonymous", "supervised", [supervisor, *hog_run(11, 12, 12), killed, stopped], 0)
    assert verdict is not None
    assert verdict[:2] == ("worker-killed", "worker-killed")
    assert verdict[2]["where"] == "1/1"
    # Killed, but in a step its start line did not announce: not as predicted.
    verdict = demo.verdict_of("anonymous", "supervised", [supervisor, *hog_run(5, 12, 12), killed, stopped], 0)
    assert verdict is not None
    assert verdict[0] == "worker-killed-outside-announced-steps"
