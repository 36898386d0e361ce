"""`make demo` before it reaches a Docker engine: every refusal is one line on stderr and an exit code of its own.

The failures that need an engine (the base image, the runtime's own refusal, a prebuilt local image) are tested in
test_demo_engine.py, on a real one.
"""

from __future__ import annotations

from pathlib import Path

import docker.constants
import pytest

from infra.settings import ConfigError
from oomtools import demo, errors, verdict
from oomtools.arguments import Parser
from oomtools.rehearsal import Outcome, fits_engine, stack_pod
from oomtools.render import render, stack_file
from workload.memory import MIB


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
        (["--bogus"], "demo: unrecognized arguments: --bogus (see oom-killer demo --help)"),
        (["--stack", "../etc"], "demo: --stack '../etc': a stack name is letters, digits, '-', '_' and '.'"),
    ],
)
def test_bad_arguments_exit_2_in_one_line(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(argv) == demo.EXIT_BAD_CONFIG == 2
    assert one_line_failure(capsys) == expected


@pytest.mark.parametrize(
    ("overrides", "starts"),
    [
        # 20 MiB with the dev stack's 16 MiB steps was killed before its first step.
        (["memoryLimitMb=20"], "demo: invalid config oom-killer:memoryIncrementMb=16: must be at most 3"),
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


def test_a_mistyped_stack_is_refused_naming_the_stacks_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    # The issue's `--stack devv` ran the project's defaults for 41 s and exited 0: a rehearsal of no stack it meant.
    assert not stack_file("devv").exists()
    assert demo.main(["--stack", "devv"]) == demo.EXIT_BAD_CONFIG
    assert one_line_failure(capsys) == (
        "demo: --stack devv: there is no Pulumi.devv.yaml (did you mean dev? stacks here: dev); for a stack on the "
        "project's defaults, make its file first: touch Pulumi.devv.yaml"
    )


def test_no_engine_is_exit_3_in_one_line_naming_the_address_it_tried(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The issue saw a Python exception's text ("Error while fetching server API version: ('Connection aborted.',
    # FileNotFoundError(2, ...))") and not the address: now the address, where it came from, and the socket's error.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert demo.main([]) == demo.EXIT_NO_ENGINE
    assert one_line_failure(capsys) == (
        f"demo: no Docker engine answers at unix://{tmp_path}/no-engine.sock (DOCKER_HOST): No such file or directory"
    )
    monkeypatch.delenv("DOCKER_HOST")
    assert demo.engine_address() == ("unix:///var/run/docker.sock", "DOCKER_HOST is unset: the default socket")
    sdk_default = docker.constants.DEFAULT_UNIX_SOCKET
    assert sdk_default == "http+unix://" + demo.DEFAULT_DOCKER_HOST.removeprefix("unix://")  # the SDK's own default


def test_an_engine_error_comes_down_to_the_sockets_own_words() -> None:
    # As the Docker SDK raises it: its own error, from requests', whose arguments hold urllib3's and the socket's.
    refused = ConnectionRefusedError(111, "Connection refused")
    error = RuntimeError("Error while fetching server API version: ...")
    error.__cause__ = ValueError("Connection aborted.", refused)
    assert errors.root_cause(error) == "Connection refused"
    assert errors.root_cause(RuntimeError("Invalid bind address format: foo")) == "Invalid bind address format: foo"


def test_a_kube_api_error_comes_down_to_the_sockets_own_words_not_urllib3s_repr() -> None:
    # As urllib3 raises it under the Kubernetes client: MaxRetryError from NewConnectionError from the socket's.
    import urllib3

    pool = urllib3.HTTPSConnectionPool("127.0.0.1", 1)
    with pytest.raises(urllib3.exceptions.MaxRetryError) as raised:
        pool.urlopen("GET", "/version", retries=urllib3.Retry(0))
    assert "HTTPSConnectionPool" in str(raised.value)  # what the line used to show
    assert errors.root_cause(raised.value) == "Connection refused"


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        # The typo said to `pulumi config rm` it: wrong for a --set, which is in no stack file.
        ("memoryIncremntMb=30", "demo: --set memoryIncremntMb=30: not a setting of this project: did you mean "
         "memoryIncrementMb?"),
        ("MEMORYLIMITMB=64", "demo: --set MEMORYLIMITMB=64: not a setting of this project: did you mean "
         "memoryLimitMb?"),
        ("zzz=1", "demo: --set zzz=1: not a setting of this project (one of: memoryIncrementMb, memoryLimitMb, "),
    ],
)  # fmt: skip
def test_a_set_of_an_unknown_key_names_it_and_the_nearest_setting_in_one_line(
    pair: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--set", pair]) == demo.EXIT_BAD_CONFIG
    line = one_line_failure(capsys)
    assert line.startswith(expected)
    assert "pulumi config rm" not in line


def test_an_unknown_key_in_the_stack_config_names_the_nearest_setting_and_how_to_remove_it() -> None:
    # The stack file's path (Pulumi.<stack>.yaml, or `pulumi up` itself): there `pulumi config rm` is the remedy.
    with pytest.raises(ConfigError) as caught:
        render({"memoryIncremntMb": "30"})
    assert str(caught.value) == (
        "invalid config oom-killer:memoryIncremntMb='30': is not a setting of this project (Pulumi.yaml declares "
        "them all): did you mean memoryIncrementMb? `pulumi config rm memoryIncremntMb` removes it"
    )
    with pytest.raises(ConfigError, match=r": a typo\? `pulumi config rm zzz` removes it$"):
        render({"zzz": "1"})


def test_the_banner_says_when_set_changed_the_stacks_settings() -> None:
    pod = stack_pod("dev", {"memoryLimitMb": "64"})
    assert demo.banner("dev", {"memoryLimitMb": "64"}, pod) == (
        "demo: running it as the dev stack declares it, with --set memoryLimitMb=64: memory limit 64Mi (no swap), "
        "+16 MiB every 1000 ms, read-only, no network; the kill predicted 2 to 4 s after it starts"
    )
    plain = demo.banner("dev", {}, stack_pod("dev"))
    assert plain.startswith("demo: running it as the dev stack declares it: memory limit 128Mi (no swap)")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"replicas": "3"}, "as the dev stack declares it, with --set replicas=3 (one pod of its 3 replicas): "),
        ({"scope": "node"}, "with --set scope=node (one pod of its DaemonSet: scope=node runs one on every node "),
    ],
)
def test_the_banner_says_when_the_stack_declares_more_pods_than_the_one_rehearsed(
    overrides: dict[str, str], says: str
) -> None:
    # The replicas=3 and scope=node each rehearsed one container without saying so.
    assert says in demo.banner("dev", overrides, stack_pod("dev", overrides))


def test_a_limit_the_engines_machine_cannot_hold_is_refused_and_one_below_is_not() -> None:
    # The memoryLimitMb=1048576 on a 23.5 GiB engine would have pressed on the host for some 18 hours.
    engine = 23_500 * MIB
    refused = fits_engine(1_048_576 * MIB, engine)
    assert refused is not None
    assert refused.startswith("it is not below the Docker engine's memory (22.9 GiB)")
    assert refused.endswith("at most 23499 on this engine")
    assert fits_engine(engine - MIB, engine) is None
    assert fits_engine(engine, 0) is None  # an engine that does not say: nothing to compare with


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
    kills, fields = verdict.kill_fields(hog_run(13, 13, 16), container_killed=True)
    assert kills.status == verdict.PASSED
    assert fields == {"killed_in_step": "14", "announced_steps": "13..16", "where": "2/4"}


@pytest.mark.parametrize(("steps", "where"), [(10, "early"), (16, "late")])
def test_a_kill_outside_the_announced_steps_is_not_as_predicted(steps: int, where: str) -> None:
    kills, fields = verdict.kill_fields(hog_run(steps, 13, 16), container_killed=True)
    assert kills.status == verdict.FAILED
    assert fields["where"] == where


def test_a_kill_before_the_start_line_announced_no_step_and_is_not_as_predicted() -> None:
    # The kernel killed the hog before it printed its start line: no step was announced, so no kill came in one.
    judged = verdict.judge_run({}, [], oom_killed=True, exit_code=137)
    assert (judged.happened, judged.predicted) == ("OOMKilled-before-start", "OOMKilled")
    assert judged.fields == {"last_allocated_mib": 0, "killed_in_step": "1", "announced_steps": "none",
                             "where": "before-start"}  # fmt: skip
    assert judged.item.status == verdict.FAILED
    # A supervised worker killed before its own start line, likewise.
    supervisor = {"event": "supervisor_start", "oom_group": "0"}
    killed = {"event": "child_exit", "signal": "SIGKILL", "oom_kill": "1"}
    judged = verdict.judge_run({"PROCESS_MODEL": "supervised"}, [supervisor, killed], oom_killed=False, exit_code=0)
    assert judged.happened == "worker-killed-before-start"
    assert not judged.item.ok
    # A kill with no kill to hold it to cannot pass: no kill recorded is nothing checked, not all([]).
    assert verdict.kill_fields([], container_killed=False)[0].status == verdict.NOTHING_CHECKED


def test_a_kill_whose_start_line_announced_no_step_is_outside_the_announced_steps() -> None:
    start = {"event": "start", "predicted_seconds": "none"}  # a ceiling or page cache: no kill announced
    kills, fields = verdict.kill_fields([start, {"event": "step", "step": "1"}], container_killed=True)
    assert kills.status == verdict.FAILED
    assert fields["where"] == "unannounced"


def test_a_supervised_worker_that_exited_on_its_own_is_not_a_worker_kill() -> None:
    supervisor = {"event": "supervisor_start", "oom_group": "0"}
    exited = {"event": "child_exit", "exit_code": "1", "oom_kill": "0"}
    stopped = {"event": "stop", "children": "1", "stopped_worker": "none"}
    env = {"PROCESS_MODEL": "supervised"}
    judged = verdict.judge_run(env, [supervisor, *hog_run(3, 12, 12), exited, stopped], False, 0)
    assert (judged.happened, judged.predicted) == ("ended-otherwise", "worker-killed")
    assert not judged.item.ok
    killed = {"event": "child_exit", "signal": "SIGKILL", "oom_kill": "1"}
    judged = verdict.judge_run(env, [supervisor, *hog_run(11, 12, 12), killed, stopped], False, 0)
    assert (judged.happened, judged.predicted) == ("worker-killed", "worker-killed")
    assert judged.fields["where"] == "1/1"
    assert judged.item.ok
    # Killed, but in a step its start line did not announce: not as predicted.
    judged = verdict.judge_run(env, [supervisor, *hog_run(5, 12, 12), killed, stopped], False, 0)
    assert judged.happened == "worker-killed-outside-announced-steps"


def ran(lines: list[str], times: list[float], *, killed: bool, finished: float) -> Outcome:
    """A run as the engine reported it: the container started at t=100 on the engine's clock."""
    stamps: list[float | None] = [*times]
    return Outcome(killed, 137 if killed else 0, 99.0, lines, "", stamps, started_at=100.0, finished_at=finished)


def test_the_kill_is_timed_on_the_clocks_its_predictions_use() -> None:
    # The issue compared the verdict's seconds=10.0 (the whole run, on the demo's clock) with the start line's
    # predicted_seconds=7.0 (from the first step): each time now stands beside the prediction of the same span.
    lines = ["event=start predicted_seconds=7.0", *(f"event=step step={n}" for n in range(1, 8))]
    times = [100.4, *(100.4 + n for n in range(7))]  # the interpreter took 0.4 s to its start line
    fields = demo.kill_timing(ran(lines, times, killed=True, finished=107.5), {"earliest": 6.0, "latest": 8.0})
    assert fields == {
        "seconds_from_first_step": 7.1,
        "predicted_seconds": "7.0",
        "seconds_from_start": 7.5,
        "predicted_seconds_from_start": "6..8",
    }


def test_a_supervised_workers_kill_is_timed_from_its_own_start_and_the_container_time_is_left_out() -> None:
    lines = [
        "event=supervisor_start process_model=supervised",
        "event=start predicted_seconds=2.0",
        "event=step step=1",
        "event=child_exit signal=SIGKILL oom_kill=1",
        "event=start predicted_seconds=2.0",
    ]
    times = [100.1, 100.3, 100.3, 102.5, 103.5]
    fields = demo.kill_timing(ran(lines, times, killed=False, finished=110.0), {"earliest": 1.0, "latest": 3.0})
    assert fields == {"seconds_from_first_step": 2.2, "predicted_seconds": "2.0"}


def test_no_kill_no_kill_time() -> None:
    lines = ["event=start predicted_seconds=none", "event=step step=1", "event=holding allocated_mib=32"]
    assert demo.kill_timing(ran(lines, [100.2, 100.2, 100.3], killed=False, finished=106.0), None) == {}


def test_the_page_cache_verdict_says_what_was_written_and_what_is_charged() -> None:
    # The issue read `held_mib=256 limit_mib=128` beside a step line's limit_pct=99.9: 256 MiB written to files, of
    # which the cgroup is charged what is left in the page cache, at the limit.
    holding = {
        "event": "holding", "allocated_mib": "256", "cgroup_usage_mib": "127", "limit_pct": "99.9",
        "working_set_mib": "21", "file_mib": "119",
    }  # fmt: skip
    judged = verdict.judge_run({"MEMORY_KIND": "pagecache"}, [{"event": "start"}, holding], False, 0)
    fields = judged.fields
    assert (judged.happened, judged.predicted) == ("held-below-limit", "held-below-limit")
    assert "held_mib" not in fields
    assert {key: fields[key] for key in ("files_written_mib", "cgroup_usage_mib", "limit_pct")} == {
        "files_written_mib": 256,
        "cgroup_usage_mib": "127",
        "limit_pct": "99.9",
    }


def test_the_help_lists_every_exit_code_it_promises() -> None:
    codes = {value for name, value in vars(demo).items() if name.startswith("EXIT_")}
    assert set(demo.CODE_MEANINGS) == codes
    text = demo.configure(Parser(prog="oom-killer demo")).format_help()
    assert "listed below" in text
    listed = text[text.index("exit codes:") :]
    for code in codes:
        assert f"\n  {code} " in listed, code
