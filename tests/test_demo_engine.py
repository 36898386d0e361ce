"""`make demo`'s failures that only a real Docker engine can show, and the settings' baseline rule on a real runtime.

Needs a Docker engine (DOCKER_HOST or the default socket) and BASE_IMAGE where Docker Hub is out of reach, as
test_container_e2e.py does. Without an engine these skip, saying why; in CI they fail instead.
"""

from __future__ import annotations

import docker
import docker.errors
import pytest

from infra.table import step_room_mib
from oomtools import demo
from oomtools.rehearsal import DeclaredPod, rehearse, stack_pod
from tests.support import CONTAINER_LIMIT_MIB
from workload import logfmt
from workload.kinds import BASELINE_MAX_MIB

LIMIT_MIB = CONTAINER_LIMIT_MIB  # the limit of dev_pod (tests/conftest.py)


def steps_of(lines: list[str]) -> list[dict[str, str]]:
    return [fields for fields in map(logfmt.parse, lines) if fields.get("event") == "step"]


def demo_failure(capsys: pytest.CaptureFixture[str]) -> str:
    """The demo's one line of failure on stderr (never a traceback)."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("demo: ")
    return lines[0]


@pytest.mark.usefixtures("engine")
def test_make_demo_says_to_set_base_image_when_the_base_cannot_be_had(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a laptop with Docker Hub out of reach: a base image the engine neither has nor can pull.
    monkeypatch.setenv("BASE_IMAGE", "registry.invalid/python:3.12-slim")
    assert demo.main(["--set", f"memoryLimitMb={LIMIT_MIB}"]) == demo.EXIT_NO_IMAGE == 4
    line = demo_failure(capsys)
    assert line.startswith("demo: the base image registry.invalid/python:3.12-slim is not on the Docker engine")
    assert "set BASE_IMAGE to an image with python3" in line


@pytest.mark.usefixtures("dev_pod")  # an engine that answers, and the image built
def test_make_demo_reports_the_runtimes_own_refusal_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settings refuse such a limit first; were one to slip through, the engine's 400 is one line, exit 5.
    pod = stack_pod("dev", {"memoryLimitMb": str(LIMIT_MIB)})
    pod.container["resources"]["limits"]["memory"] = "4Mi"
    monkeypatch.setattr(demo, "declared", lambda _stack, _overrides: pod)
    assert demo.main([]) == demo.EXIT_ENGINE_REFUSED == 5
    line = demo_failure(capsys)
    assert line.startswith("demo: the Docker engine refused to run the container: ")
    assert "Minimum memory limit allowed is 6MB" in line


def test_a_prebuilt_image_already_on_the_engine_is_run_without_a_pull(
    engine: docker.DockerClient, dev_pod: DeclaredPod, capsys: pytest.CaptureFixture[str]
) -> None:
    # No registry answers here: a pull would fail, so an OOM kill proves the local image was used as it is.
    local = dev_pod.container["image"]
    assert demo.main(["--set", f"memoryLimitMb={LIMIT_MIB}", "--set", f"image={local}"]) == demo.EXIT_AS_PREDICTED
    assert logfmt.parse(capsys.readouterr().out.splitlines()[-1])["verdict"] == "OOMKilled"
    missing = "oom-killer:not-built-here"
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(missing)
    assert demo.main(["--set", f"memoryLimitMb={LIMIT_MIB}", "--set", f"image={missing}"]) == demo.EXIT_NO_IMAGE
    assert demo_failure(capsys).startswith(f"demo: {missing} is not on the Docker engine and cannot be pulled: ")


@pytest.mark.usefixtures("dev_pod")  # the image built
def test_the_demo_rehearses_a_pod_level_limit_as_a_kubelet_runs_it(capsys: pytest.CaptureFixture[str]) -> None:
    # limitScope=pod: its one container stands for the pod, under the pod's limit, and the hog is told that limit as
    # the Downward API tells it; it finds the same one in its cgroup, and is killed where it and the stack said.
    assert demo.main(["--set", f"memoryLimitMb={LIMIT_MIB}", "--set", "limitScope=pod"]) == 0
    out = capsys.readouterr().out
    assert f"memory limit {LIMIT_MIB}Mi (the pod's)" in out
    (start,) = [logfmt.parse(line.strip()) for line in out.splitlines() if line.strip().startswith("event=start ")]
    assert (start["limit_mib"], start["limit_scope"], start["limit_source"]) == (str(LIMIT_MIB), "pod", "cgroup")
    verdict = logfmt.parse(out.strip().splitlines()[-1])
    assert (verdict["verdict"], verdict["predicted"], verdict["exit_code"]) == ("OOMKilled", "OOMKilled", "137")


@pytest.mark.usefixtures("dev_pod")  # the image built
def test_the_largest_step_the_settings_allow_completes_before_the_kill(engine: docker.DockerClient) -> None:
    # memoryIncrementMb may be memoryLimitMb less the 16 MiB baseline and the step's page tables: the first step must
    # fit on a real runtime.
    largest = step_room_mib(LIMIT_MIB, "single")
    pod = stack_pod("dev", {"memoryLimitMb": str(LIMIT_MIB), "memoryIncrementMb": str(largest)})
    outcome = rehearse(engine, pod)
    assert outcome.oom_killed is True
    assert [step["allocated_mib"] for step in steps_of(outcome.lines)] == [str(largest)]


@pytest.mark.usefixtures("dev_pod")  # the image built
def test_the_largest_ceiling_the_settings_allow_holds_on_a_real_runtime(engine: docker.DockerClient) -> None:
    # memoryCeilingMb may be memoryLimitMb less the 16 MiB baseline: it must hold there, never killed.
    largest = LIMIT_MIB - BASELINE_MAX_MIB
    pod = stack_pod("dev", {"memoryLimitMb": str(LIMIT_MIB), "memoryCeilingMb": str(largest)})
    outcome = rehearse(engine, pod, stop_after_holding=2.0)
    assert outcome.oom_killed is False
    assert outcome.exit_code == 0
    assert any(line.startswith(f"event=holding ceiling_mib={largest} ") for line in outcome.lines)
