"""The Deployment's container, exactly as the program declares it, run by a real Docker engine the way a kubelet
would run it, and OOM-killed by the kernel.

Needs a Docker engine (DOCKER_HOST or the default socket); `.ci/run` starts one and builds BASE_IMAGE from Debian
packages. Without an engine these skip, saying why; in CI they fail instead.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from oomtools import demo
from oomtools.rehearsal import DeclaredPod, build_image, rehearse, run_options, stack_pod, start
from tests.prediction import assert_killed_in_announced_range, drop_page_cache
from tests.support import CONTAINER_LIMIT_MIB, require
from workload import cgroup, logfmt
from workload.memory import MIB

LIMIT_MIB = CONTAINER_LIMIT_MIB  # the limit of dev_pod (tests/conftest.py)


# The workload's container tests run on the oldest and the newest Python it claims: the default base (CI:
# BASE_IMAGE, Debian bookworm's 3.11) and Debian trixie's 3.13 (BASE_IMAGE_TRIXIE, which .ci/run builds).
NEWEST_BASE = ("BASE_IMAGE_TRIXIE", (3, 13))


def image_python(engine: docker.DockerClient, image: str) -> tuple[int, int]:
    printed = engine.containers.run(
        image,
        entrypoint=["python3", "-c", "import sys; print(*sys.version_info[:2])"],
        network_mode="none",
        remove=True,
    )
    major, minor = printed.decode().split()
    return int(major), int(minor)


@pytest.fixture(scope="module", params=["default", "newest"])
def base_overrides(request: pytest.FixtureRequest) -> dict[str, str]:
    """Stack settings that pick the base image: none (the default one), or the newest Python's."""
    if request.param == "default":
        return {}
    variable, python = NEWEST_BASE
    image = os.environ.get(variable, "")
    require(bool(image), f"{variable} is not set: no base image with Python {'.'.join(map(str, python))}")
    return {"baseImage": image}


@pytest.fixture(scope="module")
def base_pod(engine: docker.DockerClient, base_overrides: dict[str, str]) -> DeclaredPod:
    """The dev stack's pod with a small limit on one of the bases, its image built from the Dockerfile."""
    pod = stack_pod("dev", {"memoryLimitMb": str(LIMIT_MIB), **base_overrides})
    build_image(engine, pod)
    python = image_python(engine, pod.container["image"])
    assert python >= (3, 11), f"the image runs Python {python}; the README claims 3.11 or newer"
    if base_overrides:
        assert python == NEWEST_BASE[1]
    return pod


def steps_of(lines: list[str]) -> list[dict[str, str]]:
    return [fields for fields in map(logfmt.parse, lines) if fields.get("event") == "step"]


def test_the_declared_container_is_oom_killed_with_exit_137(engine: docker.DockerClient, base_pod: DeclaredPod) -> None:
    # What the program declared is what runs: the dev stack's increment and pace, our small limit.
    env = {item["name"]: item["value"] for item in base_pod.container["env"]}
    assert base_pod.container["resources"]["limits"]["memory"] == f"{LIMIT_MIB}Mi"
    increment = int(env["MEMORY_INCREMENT_MB"])
    # A node's first run: nothing of the image's files in the page cache, so the container reads the interpreter
    # itself and its charge at start holds cache the kernel takes back before it kills (CI once saw that kill a
    # step after a prediction that counted the whole charge).
    require(os.geteuid() == 0, "dropping the page cache needs root")
    drop_page_cache()

    outcome = rehearse(engine, base_pod)

    assert outcome.oom_killed is True, outcome.lines
    assert outcome.exit_code == 137
    start_line = logfmt.parse(outcome.lines[0])
    assert start_line["event"] == "start"
    assert start_line["limit_mib"] == str(LIMIT_MIB)  # the workload found the container's own limit
    steps = steps_of(outcome.lines)
    last = int(steps[-1]["allocated_mib"])
    baseline = float(start_line["baseline_rss_mib"])
    assert LIMIT_MIB - increment - baseline <= last <= LIMIT_MIB
    assert_killed_in_announced_range(start_line, len(steps))
    assert logfmt.parse(outcome.termination_message.strip()) == steps[-1]


def memory_stat_of(pid: int) -> dict[str, int]:
    """The memory.stat of a process's v1 memory cgroup, as the host sees it: its /proc/<pid>/cgroup path mapped
    through this host's own mounts by the workload's tested parser, not by hand."""
    path, _ = cgroup.parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    require(path is not None, "no v1 memory cgroup on this host (this layer reads the v1 charge)")
    assert path is not None
    mounts = cgroup.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    memory_mounts = [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
    found = cgroup.locate("/", memory_mounts, path, pid)
    assert found is not None, (path, pid)
    return cgroup.parse_memory_stat((Path(found[0]) / "memory.stat").read_text(), 1)


def test_a_cold_start_charges_the_container_its_own_files_as_the_hog_reports_and_the_kill_is_announced(
    engine: docker.DockerClient, base_pod: DeclaredPod, tmp_path: Path
) -> None:
    """A node's real first run: the page cache dropped after the container exists (the engine has copied the image's
    files for it) and before the hog starts, so the interpreter's own files are read by the container and charged to
    it. The hog's reclaimable_mib is what the cgroup's own memory.stat says beside it, and the kill still comes in
    the range it announced from that charge."""
    require(os.geteuid() == 0, "dropping the page cache needs root")
    termination_file = tmp_path / "termination-log"
    termination_file.touch()
    termination_file.chmod(0o666)
    container = engine.containers.create(**run_options(base_pod, termination_file))
    try:
        drop_page_cache()
        container.start()
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        stream = container.logs(stream=True, follow=True)
        pending = b""
        start_line: dict[str, str] = {}
        while not start_line:
            pending += next(stream)
            for raw in pending.split(b"\n")[:-1]:
                if raw.startswith(b"event=start "):
                    start_line = logfmt.parse(raw.decode())
                    stat = memory_stat_of(pid)  # beside it: the hog sleeps its interval before its first step
            pending = pending.rsplit(b"\n", 1)[-1] if b"\n" in pending else pending
        # The same arithmetic as the hog's (workload/main.py): file pages but shared memory, which cannot be dropped.
        charged_files = max(stat.get("file", 0) - stat.get("shmem", 0), 0) / MIB
        reported = int(start_line["reclaimable_mib"])
        assert reported >= 1, f"no file of its own charged to it: not a cold start ({start_line})"
        assert abs(reported - charged_files) <= 1, f"hog {reported} MiB, memory.stat {charged_files:.1f} MiB"
        result = container.wait(timeout=60)
        container.reload()
        assert (container.attrs["State"]["OOMKilled"], result["StatusCode"]) == (True, 137)
        steps = steps_of(container.logs().decode().splitlines())
        assert_killed_in_announced_range(start_line, len(steps))
    finally:
        container.remove(force=True)


def test_a_ceiling_below_the_limit_keeps_running_and_docker_stop_ends_it_with_0(
    engine: docker.DockerClient, base_pod: DeclaredPod, base_overrides: dict[str, str], tmp_path: Path
) -> None:
    settings = {"memoryLimitMb": str(LIMIT_MIB), "memoryCeilingMb": "40", "incrementIntervalMs": "200"}
    pod = stack_pod("dev", {**settings, **base_overrides})
    assert pod.container["image"] == base_pod.container["image"]  # same build: only the env differs
    container, _ = start(engine, pod, tmp_path)
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline and not any(line.startswith("event=holding") for line in lines):
            time.sleep(0.2)
            lines = container.logs().decode().splitlines()
        assert [step["allocated_mib"] for step in steps_of(lines)] == ["16", "32", "40"]
        time.sleep(1)
        container.reload()
        assert container.status == "running"
        assert container.attrs["State"]["OOMKilled"] is False

        sent = time.monotonic()
        container.stop(timeout=int(pod.spec["terminationGracePeriodSeconds"]))
        took = time.monotonic() - sent
        result = container.wait(timeout=10)
        assert result["StatusCode"] == 0
        assert took < 1.0, f"docker stop took {took:.2f}s"
        last = logfmt.parse(container.logs().decode().splitlines()[-1])
        assert (last["event"], last["signal"]) == ("stop", "SIGTERM")
    finally:
        container.remove(force=True)


@pytest.mark.usefixtures("dev_pod")  # an engine that answers, and the image built
def test_make_demo_shows_the_kill_and_ends_with_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--set", f"memoryLimitMb={LIMIT_MIB}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("event=step step=1 ") for line in printed)  # steps shown as they happen
    verdict = logfmt.parse(printed[-1])
    assert (verdict["verdict"], verdict["oom_killed"], verdict["exit_code"]) == ("OOMKilled", "true", "137")
    assert verdict["limit_mib"] == str(LIMIT_MIB)
    assert int(verdict["last_allocated_mib"]) > 0
    assert float(verdict["seconds"]) > 0


@pytest.mark.usefixtures("dev_pod")  # an engine that answers, and the image built
def test_make_demo_passes_a_ceiling_that_holds_and_fails_a_kill_it_did_not_predict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.main(["--set", f"memoryLimitMb={LIMIT_MIB}", "--set", "memoryCeilingMb=32"]) == demo.EXIT_AS_PREDICTED
    verdict = logfmt.parse(capsys.readouterr().out.splitlines()[-1])
    assert (verdict["verdict"], verdict["predicted"]) == ("held-below-limit", "held-below-limit")
    assert (verdict["oom_killed"], verdict["exit_code"]) == ("false", "0")
