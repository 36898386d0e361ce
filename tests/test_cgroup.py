"""Finding the memory limit that applies, against fixture trees of /proc/self and cgroup files.

Each tree is laid out the way the kernel shows it in that situation: the mountinfo and /proc/self/cgroup lines
are copied from real machines, the cgroup files hold what the kernel writes there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workload.cgroup import (
    discover,
    oom_kill_count,
    parse_memory_stat,
    parse_mountinfo,
    parse_pressure,
    parse_proc_cgroup,
)

MIB = 1 << 20
V1_NO_LIMIT = "9223372036854771712"

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate"
V1_MEMORY_HOST_MOUNT = (
    "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory"
)
V1_CPU_MOUNT = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct"
ROOT_MOUNT = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw"


def tree(base: Path, mountinfo: list[str], proc_cgroup: list[str], files: dict[str, str]) -> str:
    (base / "proc/self").mkdir(parents=True)
    (base / "proc/self/mountinfo").write_text("\n".join(mountinfo) + "\n")
    (base / "proc/self/cgroup").write_text("\n".join(proc_cgroup) + "\n")
    for relative, content in files.items():
        path = base / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    return str(base)


def v1_stat(hierarchical: int | str) -> str:
    return f"cache 0\nrss 1048576\nhierarchical_memory_limit {hierarchical}\nhierarchical_memsw_limit {V1_NO_LIMIT}"


def test_v2_container_with_a_cgroup_namespace_reads_memory_max_at_the_mount(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        [ROOT_MOUNT, V2_MOUNT],
        ["0::/"],
        {"/sys/fs/cgroup/memory.max": str(128 * MIB), "/sys/fs/cgroup/memory.current": str(10 * MIB)},
    )
    found = discover(root)
    assert found is not None
    assert (found.version, found.limit_bytes) == (2, 128 * MIB)
    assert found.usage_bytes() == 10 * MIB


def test_v2_host_nested_slice_takes_the_slice_limit_above_an_unlimited_service(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        [ROOT_MOUNT, V2_MOUNT],
        ["0::/system.slice/oomtest.service"],
        {
            "/sys/fs/cgroup/cgroup.controllers": "cpu memory pids",
            "/sys/fs/cgroup/system.slice/memory.max": str(1024 * MIB),
            "/sys/fs/cgroup/system.slice/memory.current": str(700 * MIB),
            "/sys/fs/cgroup/system.slice/oomtest.service/memory.max": "max",
            "/sys/fs/cgroup/system.slice/oomtest.service/memory.current": str(5 * MIB),
        },
    )
    found = discover(root)
    assert found is not None
    assert found.limit_bytes == 1024 * MIB
    assert found.path.endswith("/system.slice/oomtest.service")
    assert found.limit_path.endswith("/system.slice")
    # Usage is read where the limit binds: that is the number that reaches the limit.
    assert found.usage_bytes() == 700 * MIB


def test_v1_docker_style_maps_the_host_path_through_the_mount_root(tmp_path: Path) -> None:
    container = "/docker/0123456789abcdef"
    root = tree(
        tmp_path,
        [
            ROOT_MOUNT,
            f"35 31 0:32 {container} /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory",
            f"32 31 0:29 {container} /sys/fs/cgroup/cpu,cpuacct ro,relatime - cgroup cgroup rw,cpu,cpuacct",
        ],
        [f"12:memory:{container}", f"4:cpu,cpuacct:{container}", "1:name=systemd:" + container],
        {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": str(256 * MIB),
            "/sys/fs/cgroup/memory/memory.stat": v1_stat(256 * MIB),
            "/sys/fs/cgroup/memory/memory.usage_in_bytes": str(12 * MIB),
        },
    )
    found = discover(root)
    assert found is not None
    assert (found.version, found.limit_bytes) == (1, 256 * MIB)
    assert found.path == str(tmp_path / "sys/fs/cgroup/memory")
    assert found.usage_bytes() == 12 * MIB


def test_v1_host_nested_takes_the_parent_limit(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        [ROOT_MOUNT, V1_CPU_MOUNT, V1_MEMORY_HOST_MOUNT],
        ["4:cpu,cpuacct:/", "7:memory:/user.slice/oomtest.scope"],
        {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": V1_NO_LIMIT,
            "/sys/fs/cgroup/memory/user.slice/memory.limit_in_bytes": str(512 * MIB),
            "/sys/fs/cgroup/memory/user.slice/oomtest.scope/memory.limit_in_bytes": V1_NO_LIMIT,
            "/sys/fs/cgroup/memory/user.slice/oomtest.scope/memory.stat": v1_stat(512 * MIB),
        },
    )
    found = discover(root)
    assert found is not None
    assert (found.version, found.limit_bytes) == (1, 512 * MIB)
    assert found.limit_path.endswith("/memory/user.slice")


def test_v1_hierarchical_limit_counts_ancestors_the_mount_does_not_show(tmp_path: Path) -> None:
    # A container whose mount shows only its own cgroup, unlimited itself, under a pod cgroup with a limit.
    container = "/kubepods/burstable/pod1/abc"
    root = tree(
        tmp_path,
        [f"35 31 0:32 {container} /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory"],
        [f"9:memory:{container}"],
        {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": V1_NO_LIMIT,
            "/sys/fs/cgroup/memory/memory.stat": v1_stat(300 * MIB),
        },
    )
    found = discover(root)
    assert found is not None
    assert found.limit_bytes == 300 * MIB


@pytest.mark.parametrize("version", [1, 2])
def test_the_effective_limit_is_the_tightest_ancestor(tmp_path: Path, version: int) -> None:
    if version == 2:
        mounts, proc = [V2_MOUNT], ["0::/outer/inner"]
        base, name = "/sys/fs/cgroup", "memory.max"
    else:
        mounts, proc = [V1_MEMORY_HOST_MOUNT], ["7:memory:/outer/inner"]
        base, name = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
    root = tree(
        tmp_path,
        mounts,
        proc,
        {f"{base}/outer/{name}": str(200 * MIB), f"{base}/outer/inner/{name}": str(500 * MIB)},
    )
    found = discover(root)
    assert found is not None
    assert found.limit_bytes == 200 * MIB
    assert found.limit_path.endswith("/outer")


def test_no_limit_anywhere_is_none(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        [ROOT_MOUNT, V2_MOUNT],
        ["0::/user.slice/session.scope"],
        {
            "/sys/fs/cgroup/user.slice/memory.max": "max",
            "/sys/fs/cgroup/user.slice/session.scope/memory.max": "max",
        },
    )
    found = discover(root)
    assert found is not None
    assert found.limit_bytes is None


def test_no_cgroup_mounted_is_none(tmp_path: Path) -> None:
    assert discover(tree(tmp_path, [ROOT_MOUNT], ["0::/"], {})) is None


def test_hybrid_host_uses_the_v1_memory_hierarchy_not_the_empty_unified_one(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        [
            V1_MEMORY_HOST_MOUNT,
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        ],
        ["4:memory:/job", "0::/"],
        {"/sys/fs/cgroup/memory/job/memory.limit_in_bytes": str(64 * MIB)},
    )
    found = discover(root)
    assert found is not None
    assert (found.version, found.limit_bytes) == (1, 64 * MIB)


def test_a_cgroup_outside_the_namespace_root_falls_back_to_the_mount_point(tmp_path: Path) -> None:
    # After a process is moved out of its cgroup namespace's root, /proc/self/cgroup shows "/../..".
    root = tree(
        tmp_path,
        [V2_MOUNT.replace(" / /sys/fs/cgroup", " /../.. /sys/fs/cgroup")],
        ["0::/../../elsewhere"],
        {"/sys/fs/cgroup/memory.max": str(96 * MIB)},
    )
    found = discover(root)
    assert found is not None
    assert found.limit_bytes == 96 * MIB


def test_mountinfo_escapes_and_optional_fields_are_handled() -> None:
    mounts = parse_mountinfo(
        "36 31 0:33 / /sys/fs/cgroup/my\\040memory rw shared:1 master:2 - cgroup cgroup rw,memory\n"
        "garbage line\n" + ROOT_MOUNT
    )
    assert [(m.mount_point, m.fstype, "memory" in m.super_options) for m in mounts] == [
        ("/sys/fs/cgroup/my memory", "cgroup", True)
    ]


def test_proc_cgroup_names_v1_memory_and_unified_paths() -> None:
    assert parse_proc_cgroup("12:memory:/a/b\n5:cpu,cpuacct:/c\n0::/d\n") == ("/a/b", "/d")
    assert parse_proc_cgroup("0::/only\n") == (None, "/only")


def test_oom_kill_counter_is_read_from_both_versions(tmp_path: Path) -> None:
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert oom_kill_count(str(tmp_path), 1) == 3
    assert oom_kill_count(str(tmp_path), 2) == 2


V2_FILES = {"/sys/fs/cgroup/cgroup.controllers": "cpu memory pids"}


def v2_tree(base: Path, proc: str, files: dict[str, str], swap_total_kib: int = 0) -> str:
    all_files = {**V2_FILES, **files, "/proc/meminfo": f"MemTotal: 1000 kB\nSwapTotal: {swap_total_kib} kB"}
    return tree(base, [ROOT_MOUNT, V2_MOUNT], [proc], all_files)


def test_v2_memory_high_below_the_limit_is_found_where_it_is_set(tmp_path: Path) -> None:
    root = v2_tree(
        tmp_path,
        "0::/pod/ctr",
        {
            "/sys/fs/cgroup/pod/memory.max": str(200 * MIB),
            "/sys/fs/cgroup/pod/memory.high": "max",
            "/sys/fs/cgroup/pod/ctr/memory.max": str(100 * MIB),
            "/sys/fs/cgroup/pod/ctr/memory.high": str(80 * MIB),
        },
    )
    found = discover(root)
    assert found is not None
    assert (found.limit_bytes, found.high_bytes) == (100 * MIB, 80 * MIB)
    assert found.high_path is not None
    assert found.high_path.endswith("/pod/ctr")


def test_v2_memory_high_at_or_above_the_limit_changes_nothing_and_is_not_reported(tmp_path: Path) -> None:
    root = v2_tree(
        tmp_path,
        "0::/ctr",
        {"/sys/fs/cgroup/ctr/memory.max": str(100 * MIB), "/sys/fs/cgroup/ctr/memory.high": str(100 * MIB)},
    )
    found = discover(root)
    assert found is not None
    assert (found.high_bytes, found.high_path) == (None, None)


@pytest.mark.parametrize(
    ("own", "parent", "expected"),
    [("0", "0", 0), ("1", "0", 1), ("0", "1", 1)],
)
def test_v2_oom_group_is_1_where_the_kernel_kills_the_group(
    tmp_path: Path, own: str, parent: str, expected: int
) -> None:
    # The parent's limit binds, so an OOM there kills the highest group up to it: a parent's oom.group counts.
    root = v2_tree(
        tmp_path,
        "0::/pod/ctr",
        {
            "/sys/fs/cgroup/pod/memory.max": str(100 * MIB),
            "/sys/fs/cgroup/pod/memory.oom.group": parent,
            "/sys/fs/cgroup/pod/ctr/memory.max": "max",
            "/sys/fs/cgroup/pod/ctr/memory.oom.group": own,
        },
    )
    found = discover(root)
    assert found is not None
    assert found.oom_group == expected


def test_v2_oom_group_above_the_cgroup_whose_limit_binds_is_not_this_ooms_group(tmp_path: Path) -> None:
    root = v2_tree(
        tmp_path,
        "0::/pod/ctr",
        {
            "/sys/fs/cgroup/pod/memory.oom.group": "1",
            "/sys/fs/cgroup/pod/ctr/memory.max": str(100 * MIB),
            "/sys/fs/cgroup/pod/ctr/memory.oom.group": "0",
        },
    )
    found = discover(root)
    assert found is not None
    assert found.oom_group == 0


@pytest.mark.parametrize(
    ("swap_total_kib", "swap_max", "expected_mib"),
    [(0, "max", None), (2 << 20, "0", None), (2 << 20, str(256 * MIB), 256), (2 << 20, "max", 2048)],
)
def test_v2_swap_is_reported_only_where_it_is_on_and_allowed(
    tmp_path: Path, swap_total_kib: int, swap_max: str, expected_mib: int | None
) -> None:
    root = v2_tree(
        tmp_path,
        "0::/ctr",
        {"/sys/fs/cgroup/ctr/memory.max": str(100 * MIB), "/sys/fs/cgroup/ctr/memory.swap.max": swap_max},
        swap_total_kib,
    )
    found = discover(root)
    assert found is not None
    assert found.swap_bytes == (None if expected_mib is None else expected_mib * MIB)


@pytest.mark.parametrize(("swappiness", "expected_mib"), [("0", None), ("60", 64)])
def test_v1_swap_is_the_memsw_limit_above_the_memory_limit(
    tmp_path: Path, swappiness: str, expected_mib: int | None
) -> None:
    stat = f"rss 0\nhierarchical_memory_limit {128 * MIB}\nhierarchical_memsw_limit {192 * MIB}"
    root = tree(
        tmp_path,
        [V1_MEMORY_HOST_MOUNT],
        ["7:memory:/job"],
        {
            "/sys/fs/cgroup/memory/job/memory.limit_in_bytes": str(128 * MIB),
            "/sys/fs/cgroup/memory/job/memory.swappiness": swappiness,
            "/sys/fs/cgroup/memory/job/memory.stat": stat,
            "/proc/meminfo": "SwapTotal: 1048576 kB",
        },
    )
    found = discover(root)
    assert found is not None
    assert found.swap_bytes == (None if expected_mib is None else expected_mib * MIB)
    assert found.oom_group is None  # v1 has no memory.oom.group


def test_a_namespace_that_kept_the_outer_mount_finds_its_cgroup_by_pid(tmp_path: Path) -> None:
    # unshare --cgroup with the host's /sys/fs/cgroup: /proc/self/cgroup says "/", the mount's root is two
    # levels above the namespace's root, names unknown. A sibling at that depth must not be taken for it.
    pid = os.getpid()
    root = tree(
        tmp_path,
        [V2_MOUNT.replace(" / /sys/fs/cgroup", " /../.. /sys/fs/cgroup")],
        ["0::/"],
        {
            "/sys/fs/cgroup/pod/other/memory.max": str(50 * MIB),
            "/sys/fs/cgroup/pod/other/cgroup.procs": str(pid + 1),
            "/sys/fs/cgroup/pod/ctr/memory.max": str(120 * MIB),
            "/sys/fs/cgroup/pod/ctr/cgroup.procs": f"{pid - 1}\n{pid}",
            "/sys/fs/cgroup/pod/memory.max": str(200 * MIB),
        },
    )
    found = discover(root)
    assert found is not None
    assert found.limit_bytes == 120 * MIB
    assert found.path == str(tmp_path / "sys/fs/cgroup/pod/ctr")


def test_memory_stat_counters_by_version() -> None:
    v1 = "cache 1\nrss 2\nshmem 3\ntotal_cache 10\ntotal_rss 20\ntotal_shmem 30\ntotal_inactive_file 40\n"
    v2 = "anon 20\nfile 10\nkernel 5\nshmem 30\nfile_mapped 7\ninactive_file 40\nactive_file 1\n"
    expected = {"anon": 20, "file": 10, "shmem": 30, "inactive_file": 40}
    assert parse_memory_stat(v1, 1) == expected
    assert parse_memory_stat(v2, 2) == expected
    # v2 splits kernel memory: the slab the kernel can free (dentries, inodes) counts as reclaimable at start.
    assert parse_memory_stat(v2 + "slab_reclaimable 6\nslab_unreclaimable 2\n", 2) == {
        **expected,
        "slab_reclaimable": 6,
    }


def test_pressure_avg10_of_some_and_full() -> None:
    text = "some avg10=12.50 avg60=3.00 avg300=0.50 total=123\nfull avg10=7.25 avg60=1.00 avg300=0.10 total=99\n"
    assert parse_pressure(text) == (12.5, 7.25)
    assert parse_pressure("") == (None, None)
