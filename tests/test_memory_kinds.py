# ruff: noqa: S108  (the tests name /dev/shm and /var/tmp on purpose: a tmpfs and a disk)
"""Memory kinds and process models (issue 8), on the real kernel here (cgroup v1): tmpfs charged as memory and
killed at the limit, page cache reclaimed at the limit with no kill, a supervised worker killed while its PID 1
survives and restarts it. Also the pure parts: which filesystem a directory is on, and the settings."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prediction import assert_killed_in_announced_range
from tests.test_kernel_oom import MakeCgroup, events, make_cgroup, read_until, start_workload
from workload import logfmt
from workload.memory import FILE_PREFIX, filesystem_of, memory_dir_problem, own_files
from workload.settings import SettingsError, parse_settings

__all__ = ["make_cgroup"]  # the fixture, shared

LIMIT_MIB = 64
MIB = 1 << 20


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    """A directory on a tmpfs (/dev/shm), with a file that is not the hog's: it must survive every cleanup."""
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="oom-killer-test-") as name:
        (Path(name) / "not-the-hogs").write_text("keep me")
        yield Path(name)


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    """A directory on a disk filesystem (/var/tmp), with a file that is not the hog's."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="oom-killer-test-") as name:
        assert filesystem_of(name, Path("/proc/self/mountinfo").read_text()) not in ("tmpfs", "ramfs")
        (Path(name) / "not-the-hogs").write_text("keep me")
        yield Path(name)


def stop_within_a_second(process: subprocess.Popen[str]) -> tuple[str, float]:
    process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    stdout, _ = process.communicate(timeout=10)
    return stdout, time.monotonic() - began


# The pure parts.

MOUNTINFO = """\
22 1 8:1 / / rw - ext4 /dev/vda rw
23 22 0:5 / /dev/shm rw - tmpfs tmpfs rw
24 22 0:6 / /data rw - tmpfs tmpfs rw
25 24 8:2 / /data/disk rw - xfs /dev/vdb rw
26 22 0:7 / /with\\040space rw - ramfs ramfs rw
"""


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/dev/shm", "tmpfs"),
        ("/dev/shm/x", "tmpfs"),
        ("/dev/shmx", "ext4"),
        ("/data/disk/a", "xfs"),
        ("/data/diskette", "tmpfs"),
        ("/with space/f", "ramfs"),
        ("/var/tmp", "ext4"),
    ],
)
def test_the_filesystem_of_a_path_is_its_nearest_mount(path: str, fstype: str) -> None:
    assert filesystem_of(path, MOUNTINFO) == fstype


def test_tmpfs_needs_a_tmpfs_and_pagecache_a_disk() -> None:
    assert memory_dir_problem("tmpfs", "tmpfs") is None
    assert "not a tmpfs" in (memory_dir_problem("tmpfs", "ext4") or "")
    assert memory_dir_problem("pagecache", "ext4") is None
    assert memory_dir_problem("pagecache", "overlay") is None
    for memory_fs in ("tmpfs", "ramfs"):
        assert "disk filesystem" in (memory_dir_problem("pagecache", memory_fs) or "")


def test_kind_model_and_dir_settings() -> None:
    default = parse_settings({})
    assert (default.memory_kind, default.memory_dir, default.process_model) == ("anonymous", "", "single")
    tmpfs = parse_settings({"MEMORY_KIND": "tmpfs"})
    assert tmpfs.memory_dir == "/dev/shm"
    assert parse_settings({"MEMORY_KIND": "pagecache", "MEMORY_DIR": "/data"}).memory_dir == "/data"
    assert parse_settings({"PROCESS_MODEL": "supervised"}).process_model == "supervised"
    for env, variable in [
        ({"MEMORY_KIND": "heap"}, "MEMORY_KIND"),
        ({"PROCESS_MODEL": "forked"}, "PROCESS_MODEL"),
        ({"MEMORY_KIND": "pagecache"}, "MEMORY_DIR"),
        ({"MEMORY_KIND": "tmpfs", "MEMORY_DIR": "relative/dir"}, "MEMORY_DIR"),
    ]:
        with pytest.raises(SettingsError) as raised:
            parse_settings(env)
        assert raised.value.variable == variable


@pytest.mark.parametrize(
    ("kind", "where", "says"),
    [("tmpfs", "/var/tmp", "not a tmpfs"), ("pagecache", "/dev/shm", "disk filesystem")],
)
def test_a_dir_on_the_wrong_filesystem_is_one_line_naming_memory_dir_and_exit_2(
    make_cgroup: MakeCgroup, kind: str, where: str, says: str
) -> None:
    process = start_workload(make_cgroup(LIMIT_MIB), MEMORY_KIND=kind, MEMORY_DIR=where)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stdout == ""
    (line,) = stderr.splitlines()
    fields = logfmt.parse(line)
    assert (fields["variable"], fields["value"]) == ("MEMORY_DIR", where)
    assert says in fields["reason"]


# tmpfs: charged as the cgroup's memory (shmem), killed at the limit, the files left behind.


def test_tmpfs_files_are_charged_as_shmem_and_the_kernel_kills_at_the_limit(
    make_cgroup: MakeCgroup, tmpfs_dir: Path
) -> None:
    group = make_cgroup(LIMIT_MIB)
    process = start_workload(group, MEMORY_KIND="tmpfs", MEMORY_DIR=str(tmpfs_dir), INCREMENT_INTERVAL_MS="0")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, (stdout, stderr)
    assert group.oom_kills() >= 1
    start, steps = events(stdout, "start")[0], events(stdout, "step")
    assert start["memory_kind"] == "tmpfs"
    assert_killed_in_announced_range(start, len(steps))
    for step in steps:
        # Not the process's own memory: its RSS stays at the interpreter's, the cgroup's shmem grows instead.
        assert int(step["rss_mib"]) < 20
        assert int(step["shmem_mib"]) >= int(step["allocated_mib"]) - 1
    # The kernel's kill leaves the files (and their charge) behind, as an emptyDir medium Memory keeps them.
    left = own_files(str(tmpfs_dir))
    assert len(left) == len(steps) + 1
    assert (tmpfs_dir / "not-the-hogs").read_text() == "keep me"

    # The next run removes what the earlier one left, and only that, before its first step.
    rerun = start_workload(make_cgroup(LIMIT_MIB), MEMORY_KIND="tmpfs", MEMORY_DIR=str(tmpfs_dir))
    lines = read_until(rerun, "step")
    assert logfmt.parse(lines[0])["removed_files"] == str(len(left))
    stdout, seconds = stop_within_a_second(rerun)
    assert rerun.returncode == 0, stdout
    assert seconds < 1
    assert events(stdout, "stop")[0]["removed_files"] == "1"
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["not-the-hogs"]


def test_on_kubernetes_a_tmpfs_restart_starts_in_a_pod_still_full_and_is_killed_at_start_or_clears_it_first(
    make_cgroup: MakeCgroup, tmpfs_dir: Path
) -> None:
    """As the kubelet lays it out: the pod's cgroup with the pod's limit, each container's run in a cgroup of its own
    below it. The first run fills the emptyDir and is killed; the kubelet removes its cgroup, but the files stay in
    the emptyDir and their pages stay charged to the pod. The restart, in a new cgroup in the same pod, starts with
    the pod all but full (on Docker, above, a new container's cgroup is fresh): most often the kernel kills it before
    its first step, before it could remove anything; where the interpreter found just enough room, it removed the
    files at start and ran as a first run does (18 and 2 of 20 runs here). Either is what verify takes as predicted."""
    pod = make_cgroup(LIMIT_MIB)
    first = pod.child("first-run", LIMIT_MIB)
    second = None
    try:
        process = start_workload(first, MEMORY_KIND="tmpfs", MEMORY_DIR=str(tmpfs_dir), INCREMENT_INTERVAL_MS="0")
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, (stdout, stderr)
        left = own_files(str(tmpfs_dir))
        assert len(left) == len(events(stdout, "step")) + 1
        first.remove()
        # The pod is still full: the emptyDir's pages, charged to a cgroup that is gone, count in the pod's usage.
        assert pod.usage_bytes() >= (LIMIT_MIB - 16) * MIB

        second = pod.child("restart", LIMIT_MIB)
        rerun = start_workload(second, MEMORY_KIND="tmpfs", MEMORY_DIR=str(tmpfs_dir), INCREMENT_INTERVAL_MS="0")
        stdout, stderr = rerun.communicate(timeout=60)
        assert rerun.returncode == -signal.SIGKILL, (stdout, stderr)
        steps = events(stdout, "step")
        if not steps:  # killed at start, before its first step: before it could remove anything
            assert own_files(str(tmpfs_dir)) == left
        else:  # it got as far as removing them, then ran as a first run does
            start = events(stdout, "start")[0]
            assert start["removed_files"] == str(len(left))
            assert_killed_in_announced_range(start, len(steps))
        assert second.oom_kills() + pod.oom_kills() >= 1  # the kernel counts it where it was killed (v1: the pod)
    finally:
        for group in (second, first):
            if group is not None and group.path.exists():
                group.remove()


# Page cache: usage at the limit, no kill; working set far below; held at twice the limit.


def test_page_cache_sits_at_the_limit_and_is_reclaimed_with_no_kill(make_cgroup: MakeCgroup, disk_dir: Path) -> None:
    group = make_cgroup(LIMIT_MIB)
    process = start_workload(group, MEMORY_KIND="pagecache", MEMORY_DIR=str(disk_dir), INCREMENT_INTERVAL_MS="0")
    try:
        lines = read_until(process, "holding", timeout=60)
        time.sleep(1)
        assert process.poll() is None, "page cache is reclaimed, so it must still be running"
    finally:
        stdout, seconds = stop_within_a_second(process)
    assert process.returncode == 0
    assert seconds < 1
    start = logfmt.parse(lines[0])
    assert start["predicted_steps"] == "none"
    assert start["ceiling_mib"] == str(2 * LIMIT_MIB)
    holding = logfmt.parse(lines[-1])
    assert holding["allocated_mib"] == str(2 * LIMIT_MIB)
    assert group.oom_kills() == 0
    usage, working_set = int(holding["cgroup_usage_mib"]), int(holding["working_set_mib"])
    # What a dashboard on usage sees (at the limit) against what the kubelet and the OOM killer go by.
    assert usage >= LIMIT_MIB * 0.9
    assert working_set < LIMIT_MIB / 2
    assert int(holding["file_mib"]) >= LIMIT_MIB / 2
    assert events(stdout, "stop")[0]["removed_files"] == str(len([x for x in lines if x.startswith("event=step")]))
    assert sorted(p.name for p in disk_dir.iterdir()) == ["not-the-hogs"]


def test_page_cache_with_a_ceiling_holds_there(make_cgroup: MakeCgroup, disk_dir: Path) -> None:
    process = start_workload(
        make_cgroup(LIMIT_MIB), MEMORY_KIND="pagecache", MEMORY_DIR=str(disk_dir), MEMORY_CEILING_MB="30"
    )
    try:
        holding = logfmt.parse(read_until(process, "holding", timeout=60)[-1])
    finally:
        stop_within_a_second(process)
    assert holding["allocated_mib"] == "30"


# Supervised: the worker is killed, PID 1 survives, says so, and starts another.


@pytest.mark.parametrize("kind", ["anonymous", "tmpfs"])
def test_a_supervised_worker_is_killed_and_restarted_while_its_supervisor_lives(
    make_cgroup: MakeCgroup, tmpfs_dir: Path, kind: str
) -> None:
    group = make_cgroup(LIMIT_MIB)
    variables = {"PROCESS_MODEL": "supervised", "MEMORY_KIND": kind, "INCREMENT_INTERVAL_MS": "50"}
    if kind == "tmpfs":
        variables["MEMORY_DIR"] = str(tmpfs_dir)
    process = start_workload(group, **variables)
    try:
        first = read_until(process, "child_exit", timeout=60)
        second = read_until(process, "child_exit", timeout=60)
        restarted = read_until(process, "start", timeout=30)
        assert process.poll() is None, "the supervisor must survive its worker's kill"
    finally:
        stdout, seconds = stop_within_a_second(process)
    assert process.returncode == 0, stdout
    assert seconds < 1
    supervisor = logfmt.parse(first[0])
    assert supervisor["event"] == "supervisor_start"
    exits = [logfmt.parse(first[-1]), logfmt.parse(second[-1])]
    for number, exit in enumerate(exits, 1):
        assert exit["signal"] == "SIGKILL"
        assert exit["container_survived"] == "true"
        assert int(exit["oom_kill"]) == number  # the cgroup's own count, so far
        assert exit["pid"] != supervisor["pid"]
        if kind == "tmpfs":
            assert int(exit["removed_files"]) >= 1  # the master cleans up after its worker
    assert logfmt.parse(restarted[-1])["pid"] not in (exits[0]["pid"], exits[1]["pid"])
    assert group.oom_kills() == 2
    assert events(stdout, "stop")[-1]["process_model"] == "supervised"
    assert (group.path / "cgroup.procs").read_text() == "", "the worker must be gone too"
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["not-the-hogs"]


@pytest.mark.parametrize("when", ["worker-running", "restart-interval"])
def test_a_supervised_stop_counts_the_children_it_started_in_either_order(make_cgroup: MakeCgroup, when: str) -> None:
    # children: the workers PID 1 started, a stopped one included. Stopped while a worker holds at a ceiling,
    # that worker counts and is named; stopped in the pause after a kill (10 s here), none runs.
    variables = {"PROCESS_MODEL": "supervised", "INCREMENT_INTERVAL_MS": "10000"}
    if when == "worker-running":
        variables.update(MEMORY_CEILING_MB="16", MEMORY_INCREMENT_MB="16")
    else:
        variables.update(MEMORY_INCREMENT_MB=str(LIMIT_MIB))  # the first step takes it past the limit
    process = start_workload(make_cgroup(LIMIT_MIB), **variables)
    seen: list[str] = []
    try:
        seen = read_until(process, "holding" if when == "worker-running" else "child_exit", timeout=60)
    finally:
        rest, seconds = stop_within_a_second(process)
    stdout = "\n".join([*seen, rest])
    assert (process.returncode, seconds < 1) == (0, True), stdout
    exits = events(stdout, "child_exit")
    stop = events(stdout, "stop")[-1]
    if when == "worker-running":
        assert exits == []
        assert stop["stopped_worker"] == events(stdout, "start")[-1]["pid"]
        assert stop["children"] == "1"
    else:
        assert [e["signal"] for e in exits] == ["SIGKILL"]
        assert stop["stopped_worker"] == "none"
        assert stop["children"] == "1"


def test_supervised_bad_settings_exit_2_from_pid_1_before_any_worker(make_cgroup: MakeCgroup) -> None:
    process = start_workload(make_cgroup(LIMIT_MIB), PROCESS_MODEL="supervised", MEMORY_KIND="tmpfs", MEMORY_DIR="/")
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "supervisor_start" not in stdout
    assert logfmt.parse(stderr.strip())["variable"] == "MEMORY_DIR"


def test_own_files_are_recognised_by_name(tmp_path: Path) -> None:
    (tmp_path / f"{FILE_PREFIX}1-1.mem").write_bytes(b"")
    (tmp_path / f"{FILE_PREFIX}1-1.txt").write_bytes(b"")
    (tmp_path / "other.mem").write_bytes(b"")
    assert [Path(p).name for p in own_files(str(tmp_path))] == [f"{FILE_PREFIX}1-1.mem"]
