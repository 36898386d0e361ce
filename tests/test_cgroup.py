"""Finding the memory limit that applies, against fixture trees of /proc/self and cgroup files.

Each tree is laid out the way the kernel shows it in that situation: the mountinfo and /proc/self/cgroup lines
are copied from real machines, the cgroup files hold what the kernel writes there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workload.cgroup import discover, oom_kill_count, parse_mountinfo, parse_proc_cgroup

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
