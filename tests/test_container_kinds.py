"""Each memory kind and process model (issue 8) in a real Docker container, run as the stack declares it (the
emptyDir as a tmpfs mount or a directory on disk), and `make demo`'s verdict for each.

Needs a Docker engine (DOCKER_HOST or the default socket) and BASE_IMAGE, as tests/test_container_e2e.py does.
"""

from __future__ import annotations

import pytest

from oomtools import demo
from oomtools.rehearsal import DeclaredPod, build_image, rehearse, stack_pod
from tests.prediction import assert_killed_in_announced_range
from workload import logfmt

LIMIT_MIB = 64
FAST = {"memoryLimitMb": str(LIMIT_MIB), "memoryIncrementMb": "8", "incrementIntervalMs": "100"}
CASES = {
    "tmpfs": {"memoryKind": "tmpfs"},
    "pagecache": {"memoryKind": "pagecache"},
    "supervised": {"processModel": "supervised"},
    "supervised-tmpfs": {"processModel": "supervised", "memoryKind": "tmpfs"},
}


def pod_for(engine: object, case: str) -> DeclaredPod:
    pod = stack_pod("dev", {**FAST, **CASES[case]})
    build_image(engine, pod)  # type: ignore[arg-type]
    return pod


def events(lines: list[str], event: str) -> list[dict[str, str]]:
    return [fields for fields in map(logfmt.parse, lines) if fields.get("event") == event]


def test_tmpfs_in_a_container_is_charged_to_its_memory_and_oom_killed(engine: object) -> None:
    outcome = rehearse(engine, pod_for(engine, "tmpfs"))  # type: ignore[arg-type]
    assert outcome.oom_killed
    assert outcome.exit_code == 137
    steps = events(outcome.lines, "step")
    assert steps, outcome.lines
    assert events(outcome.lines, "start")[0]["memory_dir"] == "/data"
    for step in steps:
        assert int(step["rss_mib"]) < 20
        assert int(step["shmem_mib"]) >= int(step["allocated_mib"]) - 1
    assert int(steps[-1]["allocated_mib"]) >= LIMIT_MIB - 8 - 16
    assert_killed_in_announced_range(events(outcome.lines, "start")[0], len(steps))


def test_page_cache_in_a_container_sits_at_the_limit_and_holds_with_no_kill(engine: object) -> None:
    outcome = rehearse(engine, pod_for(engine, "pagecache"), stop_after_holding=1)  # type: ignore[arg-type]
    assert not outcome.oom_killed
    assert outcome.exit_code == 0
    (holding,) = events(outcome.lines, "holding")
    assert holding["allocated_mib"] == str(2 * LIMIT_MIB)
    assert int(holding["cgroup_usage_mib"]) >= LIMIT_MIB * 0.9
    assert int(holding["working_set_mib"]) < LIMIT_MIB / 2
    assert events(outcome.lines, "stop")[0]["removed_files"] == str(len(events(outcome.lines, "step")))


@pytest.mark.parametrize("case", ["supervised", "supervised-tmpfs"])
def test_a_supervised_worker_is_killed_and_the_container_lives_on(engine: object, case: str) -> None:
    outcome = rehearse(engine, pod_for(engine, case), stop_after_holding=1)  # type: ignore[arg-type]
    # Stopped by the rehearsal (SIGTERM), not killed: PID 1 survived every worker's kill.
    assert outcome.exit_code == 0, outcome.lines
    (supervisor,) = events(outcome.lines, "supervisor_start")
    assert supervisor["pid"] == "1"
    exits = events(outcome.lines, "child_exit")
    assert exits
    assert {e["signal"] for e in exits} == {"SIGKILL"}
    assert [int(e["oom_kill"]) for e in exits] == list(range(1, len(exits) + 1))
    # Each killed worker was replaced (the last one may be stopped before it logs its start line).
    assert len(events(outcome.lines, "start")) >= len(exits)
    stop = events(outcome.lines, "stop")[-1]
    assert stop["process_model"] == "supervised"
    # The stop comes while a worker runs (it is stopped, and counted) or in the restart interval (none runs).
    running = stop["stopped_worker"] != "none"
    assert stop["children"] == str(len(exits) + running)


@pytest.mark.parametrize(
    ("case", "verdict"),
    [("tmpfs", "verdict=OOMKilled "), ("pagecache", "verdict=held-below-limit "), ("supervised", "verdict=worker-")],
)
def test_make_demo_names_what_happened_and_exits_0_as_predicted(
    engine: object, case: str, verdict: str, capsys: pytest.CaptureFixture[str]
) -> None:
    del engine  # the demo finds the same engine by DOCKER_HOST; the fixture says there is one
    overrides = [f"--set={key}={value}" for key, value in {**FAST, **CASES[case]}.items()]
    assert demo.main(["--stack", "dev", *overrides]) == demo.EXIT_AS_PREDICTED
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(verdict), last
    if case != "tmpfs":
        assert logfmt.parse(last)["predicted"] == logfmt.parse(last)["verdict"]
