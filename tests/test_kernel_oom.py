"""The real thing: `python -m workload` in a memory cgroup made here, killed (or not) by the kernel itself.

These need root (or a delegated cgroup) and a memory controller. Without them they skip, saying why; in CI they
fail instead.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.memcg import CgroupUnavailable, MemoryCgroup
from tests.prediction import (
    assert_killed_in_announced_range,
    assert_one_step_where_nothing_is_reclaimable,
    drop_page_cache,
    warm_page_cache,
)
from tests.support import PROJECT, require
from workload import logfmt
from workload.cgroup import discover

LIMIT_MIB = 128
INCREMENT_MIB = 10


def events(stdout: str, event: str) -> list[dict[str, str]]:
    parsed = [logfmt.parse(line) for line in stdout.splitlines() if line.startswith("event=")]
    return [line for line in parsed if line["event"] == event]


def workload_env(**variables: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables}


MakeCgroup = Callable[[int | None], MemoryCgroup]


@pytest.fixture
def make_cgroup() -> Iterator[MakeCgroup]:
    """Makes memory cgroups with a limit in MiB (or none), and removes them after the test."""
    made: list[MemoryCgroup] = []

    def make(limit_mib: int | None) -> MemoryCgroup:
        try:
            group = MemoryCgroup.create(limit_mib)
        except CgroupUnavailable as error:
            require(False, str(error))
            raise
        made.append(group)
        return group

    yield make
    for group in made:
        group.remove()


def start_workload(group: MemoryCgroup, **variables: str) -> subprocess.Popen[str]:
    # -S: the image runs it that way too (no site-packages: the workload is stdlib only).
    return group.popen(
        [sys.executable, "-S", "-m", "workload"],
        env=workload_env(**variables),
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def start_in_a_containers_view(group: MemoryCgroup, **variables: str) -> subprocess.Popen[str]:
    """The workload in this cgroup, seeing the hierarchy as a container does: v1, the cgroup mounted as the
    memory hierarchy's root (what runc does), nothing above it in sight but the kernel's hierarchical limit; v2, a
    cgroup namespace rooted at it."""
    if group.version == 1:
        view = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        view += ['mount --bind "$0" /sys/fs/cgroup/memory && exec "$@"', str(group.path)]
    else:
        view = ["unshare", "--cgroup", "--mount", "--propagation", "private", "sh", "-c"]
        # The outer mount goes first: the kernel will not mount a superblock over its own root (tests/vm_driver.py).
        view += ['umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"', "sh"]
    return group.popen(
        [*view, sys.executable, "-S", "-m", "workload"],
        env=workload_env(**variables),
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(process: subprocess.Popen[str], event: str, timeout: float = 30) -> list[str]:
    """Lines of stdout up to and including the first line of this event."""
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith(f"event={event} "):
            return lines
    raise AssertionError(f"no {event} line; got {lines}")


# What the cold case has its cgroup read before the hog starts: about what a cold start of the interpreter reads
# (8 MiB measured here). The interpreter's own files cannot make the case alone where other Python processes run
# (in CI, make e2e beside make test): one of them may read the shared files between the cache drop and the hog's
# start, and its cgroup is charged instead (seen once: reclaimable_mib=0). A file of the test's own, on disk, that
# no other process reads, is charged to this cgroup every time.
COLD_FILES_MIB = 8


@pytest.fixture
def on_disk() -> Iterator[Path]:
    """A folder on a disk filesystem (not tmpfs, which /tmp may be), so that what is read from it is reclaimable
    file cache; removed after the test (its files' cache goes with them, so they must outlive the hog)."""
    directory = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="oom-killer-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def read_in_the_cgroup(group: MemoryCgroup, directory: Path) -> None:
    """Empty the page cache, then have a process in the cgroup read a file of COLD_FILES_MIB that nothing else reads:
    the cgroup is charged for it."""
    files = directory / "image-files"
    files.write_bytes(os.urandom(COLD_FILES_MIB << 20))
    drop_page_cache()
    reader = group.popen(["cat", str(files)], stdout=subprocess.DEVNULL)
    assert reader.wait(timeout=30) == 0


@pytest.mark.parametrize("page_cache", ["warm", "cold"])
def test_the_kernel_oom_kills_it_at_the_cgroup_limit(
    make_cgroup: MakeCgroup, tmp_path: Path, on_disk: Path, page_cache: str
) -> None:
    group = make_cgroup(LIMIT_MIB)
    require(os.geteuid() == 0 or page_cache == "warm", "dropping the page cache needs root")
    # Cold, as a node's first run: the hog's cgroup reads files itself (on a node, its image's), and its charge at
    # start holds page cache that the kernel takes back before it kills. Warm: someone else read them, none of it is
    # charged here.
    if page_cache == "cold":
        read_in_the_cgroup(group, on_disk)
    else:
        warm_page_cache()
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    process = start_workload(
        group,
        MEMORY_INCREMENT_MB=str(INCREMENT_MIB),
        INCREMENT_INTERVAL_MS="0",
        TERMINATION_MESSAGE_PATH=str(termination_log),
    )
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == -signal.SIGKILL, (process.returncode, stdout, stderr)
    assert group.oom_kills() >= 1
    start = events(stdout, "start")[0]
    steps = events(stdout, "step")
    assert start["limit_mib"] == str(LIMIT_MIB)
    baseline = float(start["baseline_rss_mib"])
    last = int(steps[-1]["allocated_mib"])
    assert LIMIT_MIB - INCREMENT_MIB - baseline <= last <= LIMIT_MIB
    for step in steps:
        assert int(step["rss_mib"]) >= int(step["allocated_mib"])
    # The kill came in a step it announced at the start: one past the last step it lived to log.
    assert_killed_in_announced_range(start, len(steps))
    if page_cache == "warm":
        assert_one_step_where_nothing_is_reclaimable(start)
    else:
        assert int(start["reclaimable_mib"]) >= COLD_FILES_MIB, start  # files read by this cgroup
    assert logfmt.parse(termination_log.read_text().strip()) == steps[-1]


# What the test's sandbox holds in its pod: a file in a tmpfs written from the sandbox's cgroup, charged to it and
# out of the hog's sight, as a pause process's pages are (under POD_SANDBOX_MAX_BYTES, the allowance).
SANDBOX_MIB = 3


@pytest.mark.parametrize("sandbox", ["empty", "charged"])
def test_under_a_pods_limit_it_finds_the_pods_limit_and_dies_in_its_announced_steps(
    make_cgroup: MakeCgroup, sandbox: str
) -> None:
    # The pod's cgroup holds the limit (limitScope=pod); the container's below it has none of its own, and its
    # sibling, the sandbox, is charged for what the hog cannot see.
    pod = make_cgroup(LIMIT_MIB)
    children = [pod.child("container", None)]
    container = children[0]
    shm = Path("/dev/shm") / f"oom-killer-test-sandbox-{os.getpid()}"  # noqa: S108 - a tmpfs is the point
    try:
        if sandbox == "charged":
            children.append(pod.child("sandbox", None))
            writer = children[-1].popen(["sh", "-c", f"head -c {SANDBOX_MIB << 20} /dev/zero > {shm}"])
            assert writer.wait(timeout=30) == 0
        warm_page_cache()
        process = start_in_a_containers_view(
            container, MEMORY_INCREMENT_MB="8", INCREMENT_INTERVAL_MS="0", POD_MEMORY_LIMIT_MB=str(LIMIT_MIB)
        )
        stdout, stderr = process.communicate(timeout=60)
    finally:
        shm.unlink(missing_ok=True)
        for child in children:
            child.remove()
    assert process.returncode == -signal.SIGKILL, (process.returncode, stdout, stderr)
    start = events(stdout, "start")[0]
    assert (start["limit_mib"], start["limit_scope"]) == (str(LIMIT_MIB), "pod")
    # v1: the kernel's hierarchical limit shows the pod's in the container's own cgroup, whose usage leaves the
    # sandbox out; v2: the cgroup namespace hides the pod's cgroup, the Downward API's figure stands in.
    assert start["limit_source"] == ("cgroup" if container.version == 1 else "downward_api")
    assert start["cgroup"] == f"v{container.version}:/sys/fs/cgroup" + ("/memory" if container.version == 1 else "")
    assert_killed_in_announced_range(start, len(events(stdout, "step")))


def test_a_ceiling_below_the_limit_holds_without_a_kill(make_cgroup: MakeCgroup) -> None:
    group = make_cgroup(LIMIT_MIB)
    process = start_workload(group, MEMORY_INCREMENT_MB="16", INCREMENT_INTERVAL_MS="0", MEMORY_CEILING_MB="40")
    try:
        lines = read_until(process, "holding")
        time.sleep(1)
        assert process.poll() is None, "it should hold at the ceiling, not exit"
        assert [logfmt.parse(line)["allocated_mib"] for line in lines if line.startswith("event=step")] == [
            "16",
            "32",
            "40",
        ]
        assert group.oom_kills() == 0
        assert group.usage_bytes() < LIMIT_MIB * (1 << 20)
    finally:
        process.terminate()
        process.communicate(timeout=5)
    assert process.returncode == 0


@pytest.mark.parametrize("pct", [50, 95])
def test_a_ceiling_in_percent_of_the_limit_holds_the_charge_there_without_a_kill(
    make_cgroup: MakeCgroup, pct: int
) -> None:
    group = make_cgroup(LIMIT_MIB)
    process = start_workload(group, MEMORY_INCREMENT_MB="16", INCREMENT_INTERVAL_MS="0", MEMORY_CEILING_PCT=str(pct))
    try:
        lines = read_until(process, "holding")
        time.sleep(1)
        assert process.poll() is None, "it should hold at the ceiling, not exit"
        usage_after = group.usage_bytes()
    finally:
        process.terminate()
        process.communicate(timeout=5)
    assert process.returncode == 0
    assert group.oom_kills() == 0
    start, holding = logfmt.parse(lines[0]), logfmt.parse(lines[-1])
    steps = [logfmt.parse(line) for line in lines if line.startswith("event=step")]
    asked = LIMIT_MIB * pct / 100
    assert float(start["asked_mib"]) == float(holding["asked_mib"]) == round(asked, 1)
    assert start["ceiling_pct"] == holding["ceiling_pct"] == str(pct)
    # The hog allocates what the percent leaves above its charge at the start, to the MiB (the start line gives that
    # charge rounded down, so one of two values); the last step is cut to it.
    ceiling, charged = int(start["ceiling_mib"]), int(start["cgroup_usage_mib"])
    assert ceiling in (int(asked - charged), int(asked - charged) - 1), (ceiling, asked, charged)
    assert int(steps[-1]["allocated_mib"]) == int(holding["allocated_mib"]) == ceiling
    assert all(int(b["allocated_mib"]) - int(a["allocated_mib"]) == 16 for a, b in itertools.pairwise(steps[:-1]))
    # The charge it holds at: the percent asked, less under one MiB (the rounding down) and whatever of the start's
    # charge the kernel has taken back since (its reclaimable page cache), plus at most a MiB the kernel charges
    # beyond the hog's own pages (its page tables take 2 KiB a MiB).
    achieved = float(holding["achieved_mib"])
    assert asked - 1 - int(start["reclaimable_mib"]) <= achieved <= asked + 1, (asked, achieved, start)
    assert float(holding["limit_pct"]) <= pct + 100 / LIMIT_MIB
    assert usage_after <= (asked + 1) * (1 << 20), "a second later it has not grown past the percent"


def charge_a_file(group: MemoryCgroup, path: Path, mib: int) -> None:
    """Write a file of mib MiB from inside the cgroup, so that its pages are charged there (page cache, or shmem
    on a tmpfs), as a container's own writes are."""
    done = group.popen(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}"], stderr=subprocess.DEVNULL)
    assert done.wait(timeout=30) == 0


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_v1_step_lines_split_the_charge_as_memory_stat_does_and_give_the_kubelets_working_set(
    make_cgroup: MakeCgroup, tmp_path: Path, where: str
) -> None:
    # 24 MiB of a file written from inside the cgroup: on disk it is page cache (file, inactive: not in the
    # working set); on a tmpfs it is shmem (counted in file too, and it cannot be dropped: in the working set).
    directory = tmp_path if where == "disk" else Path("/dev/shm")  # noqa: S108 - a tmpfs is the point; unique name
    require(directory.is_dir(), f"no {directory}")
    written = directory / f"oom-killer-charge-{os.getpid()}"
    group = make_cgroup(LIMIT_MIB)
    try:
        charge_a_file(group, written, 24)
        process = start_workload(group, MEMORY_INCREMENT_MB="16", INCREMENT_INTERVAL_MS="0", MEMORY_CEILING_MB="32")
        try:
            lines = read_until(process, "holding")
        finally:
            process.terminate()
            process.communicate(timeout=5)
    finally:
        written.unlink(missing_ok=True)
    start = logfmt.parse(lines[0])
    assert group.version == 1
    assert start["event"] == "start"
    for key in ("oom_group", "memory_high_mib", "swap_max_mib"):  # v2 only, or not on here (no swap)
        assert key not in start
    last = logfmt.parse(lines[-2])
    usage, anon = int(last["cgroup_usage_mib"]), int(last["anon_mib"])
    file, shmem, working_set = int(last["file_mib"]), int(last["shmem_mib"]), int(last["working_set_mib"])
    assert int(last["allocated_mib"]) == 32
    assert 32 <= anon <= usage
    assert file >= 23  # the file's 24 MiB, less rounding
    if where == "disk":
        assert shmem == 0
        assert working_set <= usage - 20  # most of the file is inactive, as freshly written pages are
    else:
        assert shmem >= 23
        # tmpfs pages are not on the file LRU lists: all in the working set, which leaves out only inactive page
        # cache (the interpreter's files, where this cgroup read them first: a cold node).
        assert working_set >= usage - (file - shmem) - 1
    for key in ("high_events", "max_events", "pressure_some_avg10", "throttled"):  # v2 only
        assert key not in last


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_exits_0_within_a_second(make_cgroup: MakeCgroup, stop: signal.Signals) -> None:
    group = make_cgroup(LIMIT_MIB)
    # A long pause between steps: the stop must not wait for it to end.
    process = start_workload(group, MEMORY_INCREMENT_MB="4", INCREMENT_INTERVAL_MS="60000")
    read_until(process, "step")
    sent = time.monotonic()
    process.send_signal(stop)
    stdout, _ = process.communicate(timeout=5)
    took = time.monotonic() - sent
    assert process.returncode == 0
    assert took < 1.0
    last = logfmt.parse(stdout.strip().splitlines()[-1])
    assert (last["event"], last["signal"], last["allocated_mib"]) == ("stop", stop.name, "4")


def test_without_a_limit_it_refuses_with_exit_2(make_cgroup: MakeCgroup) -> None:
    group = make_cgroup(None)
    own = discover()
    require(own is not None and own.limit_bytes is None, "this test's own cgroup already has a memory limit")
    process = start_workload(group)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stdout == ""
    assert "event=refused" in stderr
    assert "ALLOW_UNLIMITED=1" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_ceiling_in_percent_without_a_limit_is_refused_with_exit_2(make_cgroup: MakeCgroup) -> None:
    group = make_cgroup(None)
    own = discover()
    require(own is not None and own.limit_bytes is None, "this test's own cgroup already has a memory limit")
    # ALLOW_UNLIMITED lets it run without a limit, but a percent of no limit is no ceiling
    process = start_workload(group, MEMORY_CEILING_PCT="90", ALLOW_UNLIMITED="1")
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stdout == ""
    fields = logfmt.parse(stderr.strip())
    assert fields["event"] == "refused"
    assert fields["reason"] == (
        "MEMORY_CEILING_PCT=90 is a percent of the memory limit, and no memory limit applies to this process"
    )
    assert len(stderr.strip().splitlines()) == 1


def test_a_bad_setting_is_one_line_and_exit_2_before_anything_is_allocated(
    make_cgroup: MakeCgroup,
) -> None:
    group = make_cgroup(LIMIT_MIB)
    process = start_workload(group, MEMORY_INCREMENT_MB="lots")
    stdout, stderr = process.communicate(timeout=30)
    assert (process.returncode, stdout) == (2, "")
    assert stderr.strip().splitlines() == [
        'level=error event=bad_setting variable=MEMORY_INCREMENT_MB value=lots reason="must be a whole number of MiB '
        'from 1 to 1048576"'
    ]
