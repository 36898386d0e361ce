# ruff: noqa: S108  (/tmp is the VM's own tmpfs, which /init mounts)
"""Memory kinds and process models (issue 8) on the real cgroup v2 kernel (tests/kernel_vm.py): tmpfs killed at
memory.max, page cache on an ext4 disk reclaimed instead (held, never killed), and a supervised worker under
memory.oom.group 0 (the worker dies, PID 1 lives and restarts it) and 1 (the kernel kills the whole group, PID 1 too).

The boot that tests/test_kernel_v2.py judges runs these layouts too (tests/kernel_vm_fixture.py); each test
judges one layout from what the driver reported.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.kernel_vm import Boot
from tests.prediction import assert_killed_in_announced_range
from tests.test_kernel_v2 import lines_of, result_of

# `vm`: what the VM's driver reported, from one boot shared by every v2 module (each module's LAYOUTS together).
pytest_plugins = ("tests.kernel_vm_fixture",)

pytestmark = pytest.mark.timeout(900)

MIB = 1 << 20
FAST = {"MEMORY_INCREMENT_MB": "8", "INCREMENT_INTERVAL_MS": "0"}


def flat(name: str, limit_mib: int, env: dict[str, str], **extra: Any) -> dict[str, Any]:
    files: dict[str, object] = {"memory.max": limit_mib * MIB, "memory.swap.max": 0}
    if "oom_group" in extra:
        files["memory.oom.group"] = extra.pop("oom_group")
    return {"name": name, "cgroups": [[name, files]], "leaf": name, "env": {**FAST, **env}, **extra}


LAYOUTS = [
    # 8 MiB steps under 96 MiB: the charge at start moves by a few MiB between boots and the kill with it (step 11
    # twice and 12 once in three boots); the range the hog announces from its own charge must hold each.
    flat("tmpfs", 96, {"MEMORY_KIND": "tmpfs", "MEMORY_DIR": "/tmp/hog"}, tmpfs_dir="/tmp/hog"),
    # Page cache: twice the limit written to a disk (ext4 on zram), held there until stopped, never killed.
    flat(
        "pagecache",
        96,
        {"MEMORY_KIND": "pagecache", "MEMORY_DIR": "/mnt/disk"},
        disk_dir="/mnt/disk",
        disk_mib=320,
        stop_after=40,
    ),
    flat(
        "supervised-group-0",
        96,
        {"PROCESS_MODEL": "supervised", "INCREMENT_INTERVAL_MS": "100"},
        oom_group=0,
        stop_after=45,
    ),
    flat(
        "supervised-group-1",
        96,
        {"PROCESS_MODEL": "supervised", "INCREMENT_INTERVAL_MS": "100"},
        oom_group=1,
        stop_after=90,
    ),
]


def test_v2_tmpfs_is_charged_as_shmem_and_killed_at_memory_max(vm: Boot) -> None:
    result = result_of(vm, "tmpfs")
    assert result["returncode"] == -signal.SIGKILL, result
    assert result["events"]["tmpfs"]["oom_kill"] >= 1
    steps = lines_of(result, "step")
    assert steps
    for step in steps:
        assert int(step["shmem_mib"]) >= int(step["allocated_mib"]) - 1
        assert int(step["rss_mib"]) < 20
    assert_killed_in_announced_range(lines_of(result, "start")[0], len(steps))
    assert len(result["memory_dir_left"]) == len(steps) + 1  # the kill leaves the files, and their charge


def test_v2_supervised_with_oom_group_0_loses_only_its_worker(vm: Boot) -> None:
    result = result_of(vm, "supervised-group-0")
    assert result["returncode"] == 0, result
    assert result["stop_seconds"] < 1
    (supervisor,) = lines_of(result, "supervisor_start")
    assert supervisor["oom_group"] == "0"
    exits = lines_of(result, "child_exit")
    assert exits, result["stdout"][-2000:]
    assert {e["signal"] for e in exits} == {"SIGKILL"}
    assert [int(e["oom_kill"]) for e in exits] == list(range(1, len(exits) + 1))
    assert result["events"]["supervised-group-0"]["oom_kill"] == len(exits)
    assert result["events"]["supervised-group-0"].get("oom_group_kill", 0) == 0


def test_v2_supervised_with_oom_group_1_dies_with_its_worker(vm: Boot) -> None:
    result = result_of(vm, "supervised-group-1")
    # PID 1 is killed with its child: in a container, exit 137 and OOMKilled.
    assert result["returncode"] == -signal.SIGKILL, result
    assert result["stop_seconds"] is None, "it died before the stop"
    (supervisor,) = lines_of(result, "supervisor_start")
    assert supervisor["oom_group"] == "1"
    assert lines_of(result, "child_exit") == []
    assert result["events"]["supervised-group-1"]["oom_group_kill"] >= 1
    assert result["events"]["supervised-group-1"]["oom_kill"] >= 2  # the worker and its supervisor


def test_v2_page_cache_is_reclaimed_at_memory_max_never_killed(vm: Boot) -> None:
    result = result_of(vm, "pagecache")
    assert result["returncode"] == 0, result  # held until SIGTERM, then stopped cleanly
    assert result["events"]["pagecache"]["oom_kill"] == 0
    start = lines_of(result, "start")[0]
    assert start["predicted_steps"] == "none"  # no kill is predicted for page cache
    holding = lines_of(result, "holding")
    assert holding, result["stdout"][-2000:]
    held = holding[-1]
    assert int(held["allocated_mib"]) == 2 * 96  # twice the limit written: the cgroup could not hold it as memory
    assert int(held["cgroup_usage_mib"]) >= 96 * 3 // 4  # usage sits near the limit, full of cache
    assert int(held["working_set_mib"]) < 96 // 2  # while the working set, what an OOM kill weighs, stays small
    assert int(held["file_mib"]) > int(held["anon_mib"])
    hog_files = [name for name in result["memory_dir_left"] if name.startswith("oom-killer-hog-")]
    assert hog_files == [], "SIGTERM leaves no file of the hog's behind"
