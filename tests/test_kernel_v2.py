"""The real thing on cgroup v2: `python -m workload` on Debian's own kernel, booted under QEMU (tests/kernel_vm.py),
in each cgroup layout a node or a container runtime puts a container in, killed by that kernel.

One boot runs every layout (a boot costs about a minute of CPU under TCG); each test then judges one layout from
what the driver in the VM reported: the workload's log, its exit status, and each cgroup's memory.events.

The limits are chosen so that the charge lands mid-step near the limit (the interpreter starts at about 5 MiB and
each step adds its increment and a little bookkeeping), so "killed in the predicted step" has a margin of a few
MiB either way rather than depending on that bookkeeping.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.kernel_vm import Boot
from tests.prediction import assert_killed_in_announced_range, assert_one_step_where_nothing_is_reclaimable
from tests.support import PROJECT
from workload import logfmt

# `vm`: what the VM's driver reported, from one boot shared by every v2 module (each module's LAYOUTS together).
pytest_plugins = ("tests.kernel_vm_fixture",)

pytestmark = pytest.mark.timeout(900)

MIB = 1 << 20
POD_UID = "8d4f2b1e_6c3a_4f7e_9b21_0a5c7e3d9f10"
CONTAINER_ID = "5f1c0e9a7b3d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"
SYSTEMD = {
    "slices": ["kubepods.slice", "kubepods.slice/kubepods-burstable.slice"],
    "pod": f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID}.slice",
    "container": f"cri-containerd-{CONTAINER_ID}.scope",
}
CGROUPFS = {
    "slices": ["kubepods", "kubepods/burstable"],
    "pod": f"kubepods/burstable/pod{POD_UID.replace('_', '-')}",
    "container": CONTAINER_ID,
}
STEPS_10 = {"MEMORY_INCREMENT_MB": "10", "INCREMENT_INTERVAL_MS": "0"}


def pod_layout(
    name: str,
    driver: dict[str, Any],
    pod_mib: int,
    container_mib: int | None,
    *,
    oom_group: int = 0,
    namespace: str = "none",
    sandbox_mib: int = 0,
) -> dict[str, Any]:
    """A container's cgroup under its pod's, under the QoS slices, as a kubelet with this cgroup driver makes them;
    container_mib None: the container has no limit of its own (limitScope=pod). sandbox_mib: a sibling cgroup (the
    pod's sandbox) charged that much.

    Each layout gets its own QoS parents (a suffix) so that no layout's memory.events counts another's kills.
    """
    suffix = f"-{name}" if driver is CGROUPFS else f"_{name}"
    top: str = driver["slices"][0]
    renamed = top.replace(".slice", f"{suffix}.slice") if top.endswith(".slice") else top + suffix

    def moved(path: str) -> str:
        return renamed + path[len(top) :]

    pod = moved(driver["pod"])
    container = f"{pod}/{driver['container']}"
    own_limit = "max" if container_mib is None else container_mib * MIB
    sandbox = f"{pod}/sandbox"
    return {
        "name": name,
        "cgroups": [
            *[[moved(path), {}] for path in driver["slices"]],
            [pod, {"memory.max": pod_mib * MIB}],
            [container, {"memory.max": own_limit, "memory.swap.max": 0, "memory.oom.group": oom_group}],
            *([[sandbox, {}]] if sandbox_mib else []),
        ],
        "leaf": container,
        "pod": pod,
        "namespace": namespace,
        "env": STEPS_10,
        **({"sandbox": sandbox, "sandbox_mib": sandbox_mib} if sandbox_mib else {}),
    }


LAYOUTS: list[dict[str, Any]] = [
    {
        "name": "flat",
        # 128 MiB in 10 MiB steps: the room left at start ends near a step's end, where the 2-3 MiB the kernel's own
        # accounting adds while the hog grows can take the kill a step earlier (it did once in five CI runs when the
        # prediction was one step): the announced range holds both.
        "cgroups": [["flat", {"memory.max": 128 * MIB, "memory.swap.max": 0}]],
        "leaf": "flat",
        "env": STEPS_10,
    },
    pod_layout("systemd", SYSTEMD, pod_mib=200, container_mib=100, oom_group=1),
    pod_layout("cgroupfs", CGROUPFS, pod_mib=200, container_mib=120),
    pod_layout("pod-limit-tighter", SYSTEMD, pod_mib=80, container_mib=128, oom_group=1),
    pod_layout("namespace-fresh-mount", SYSTEMD, pod_mib=200, container_mib=100, namespace="fresh-mount"),
    pod_layout("namespace-inherited-mount", CGROUPFS, pod_mib=200, container_mib=120, namespace="inherited-mount"),
    # A limit the workload cannot see: containerd and CRI-O give each container on v2 a cgroup namespace, whose
    # fresh cgroup2 mount shows nothing above the container, and v2 has no hierarchical limit to read instead.
    pod_layout("pod-limit-unseen-in-namespace", SYSTEMD, pod_mib=80, container_mib=128, namespace="fresh-mount"),
    # limitScope=pod: the limit on the pod alone, which the Downward API hands the workload (POD_MEMORY_LIMIT_MB),
    # and a sandbox beside the container charged for what the workload cannot see.
    {
        **pod_layout("pod-scope", SYSTEMD, pod_mib=128, container_mib=None, namespace="fresh-mount", sandbox_mib=3),
        "env": {**STEPS_10, "POD_MEMORY_LIMIT_MB": "128"},
    },
    {
        # MemoryQoS: memory.high below the limit. No swap, so nothing the hog holds can be reclaimed: it is
        # throttled from the step that crosses high, then killed at the limit all the same.
        "name": "memory-high",
        "cgroups": [
            ["high", {"memory.max": 128 * MIB, "memory.high": 112 * MIB, "memory.swap.max": 0, "memory.oom.group": 1}]
        ],
        "leaf": "high",
        "env": {"MEMORY_INCREMENT_MB": "16", "INCREMENT_INTERVAL_MS": "0"},
    },
]
LAYOUTS.append(
    {
        # Swap on (a zram device the driver makes for this layout alone) and allowed, 64 MiB of it: the hog's pages
        # go out to swap at the limit, and the kill comes once swap.max is full too, that much later.
        "name": "swap",
        "cgroups": [["swap", {"memory.max": 96 * MIB, "memory.swap.max": 64 * MIB}]],
        "leaf": "swap",
        "swap_mib": 256,
        "env": {"MEMORY_INCREMENT_MB": "16", "INCREMENT_INTERVAL_MS": "0"},
    }
)
BY_NAME = {layout["name"]: layout for layout in LAYOUTS}
# The limit that binds, and where: the tighter of the container's and the pod's.
EXPECTED_LIMIT = {
    "flat": (128, "flat"),
    "systemd": (100, "leaf"),
    "cgroupfs": (120, "leaf"),
    "pod-limit-tighter": (80, "pod"),
    "namespace-fresh-mount": (100, "leaf"),
    "namespace-inherited-mount": (120, "leaf"),
    "memory-high": (128, "high"),
    "swap": (96, "swap"),
}


def result_of(vm: Boot, name: str) -> dict[str, Any]:
    result = vm.results.get(name)
    assert result is not None, f"no result for {name}; the driver wrote:\n{vm.output}\nconsole:\n{vm.console[-3000:]}"
    assert "error" not in result, result
    return result


def lines_of(result: dict[str, Any], event: str) -> list[dict[str, str]]:
    parsed = [logfmt.parse(line) for line in result["stdout"].splitlines() if line.startswith("event=")]
    return [line for line in parsed if line["event"] == event]


def path_of(layout: dict[str, Any], where: str) -> str:
    return str(layout[where] if where in ("leaf", "pod") else where)


@pytest.mark.parametrize("name", list(EXPECTED_LIMIT))
def test_the_v2_kernel_kills_it_in_the_predicted_step_at_the_limit_that_binds(vm: Boot, name: str) -> None:
    result, layout = result_of(vm, name), BY_NAME[name]
    limit_mib, binding = EXPECTED_LIMIT[name]
    (start,) = lines_of(result, "start")
    steps = lines_of(result, "step")

    assert result["returncode"] == -9, result  # SIGKILL, from the kernel
    assert start["limit_mib"] == str(limit_mib)
    assert start["cgroup"].startswith("v2:")
    if layout.get("namespace", "none") == "none":
        # Without a namespace the cgroup it names is the host's path of the one that binds.
        assert start["cgroup"] == f"v2:/sys/fs/cgroup/{path_of(layout, binding)}"
    # Killed during a step it announced: one past the last step it lived to log. The VM's root is in memory, so
    # none of the interpreter's files are page cache the kernel could take back: one step, or two where the
    # kernel's own growth straddles a boundary.
    assert_killed_in_announced_range(start, len(steps))
    assert_one_step_where_nothing_is_reclaimable(start)
    assert int(steps[-1]["cgroup_usage_mib"]) <= limit_mib
    # The kernel counted the kill in the process's own cgroup and in the one whose limit it hit.
    events = result["events"]
    assert events[layout["leaf"]]["oom_kill"] >= 1, events
    assert events[path_of(layout, binding)]["oom_kill"] >= 1, events
    assert events[path_of(layout, binding)]["max"] >= 1, events


@pytest.mark.parametrize("name", list(EXPECTED_LIMIT))
def test_v2_step_lines_carry_the_kernels_own_accounting(vm: Boot, name: str) -> None:
    result = result_of(vm, name)
    steps = lines_of(result, "step")
    assert steps, result
    for step in steps:
        usage, anon, ws = int(step["cgroup_usage_mib"]), int(step["anon_mib"]), int(step["working_set_mib"])
        # Anonymous memory is what the hog takes: it is almost all of the charge, and at least what it allocated
        # unless some went out to swap (memory.stat counts resident pages).
        assert anon <= usage
        if "swap_mib" not in BY_NAME[name]:
            assert int(step["allocated_mib"]) <= anon
        # file includes shmem; anon and file together are at most the charge (which also counts kernel memory).
        assert int(step["shmem_mib"]) <= int(step["file_mib"]) <= usage - anon
        assert ws <= usage  # usage minus inactive file
        assert int(step["high_events"]) >= 0
        assert int(step["max_events"]) >= 0
        assert 0.0 <= float(step["pressure_some_avg10"]) <= 100.0
        assert 0.0 <= float(step["pressure_full_avg10"]) <= float(step["pressure_some_avg10"])


def test_oom_group_is_reported_as_the_kernel_applies_it(vm: Boot) -> None:
    for name in EXPECTED_LIMIT:
        result, layout = result_of(vm, name), BY_NAME[name]
        (start,) = lines_of(result, "start")
        leaf_files = dict(layout["cgroups"])[layout["leaf"]]
        expected = int(leaf_files.get("memory.oom.group", 0))
        assert start["oom_group"] == str(expected), name
        # What it means: with 1 the kernel killed the cgroup as a group, and says so in memory.events.
        group_kills = result["events"][layout["leaf"]]["oom_group_kill"]
        assert (group_kills >= 1) == (expected == 1), (name, result["events"])


def test_in_a_cgroup_namespace_a_tighter_pod_limit_is_not_seen_and_the_kill_comes_before_the_prediction(
    vm: Boot,
) -> None:
    # What docs/configuration.md warns of: the workload reports the container's limit, the kernel enforces the pod's.
    name = "pod-limit-unseen-in-namespace"
    result, layout = result_of(vm, name), BY_NAME[name]
    (start,) = lines_of(result, "start")
    steps = lines_of(result, "step")
    assert start["limit_mib"] == "128"
    assert result["returncode"] == -9
    assert len(steps) + 1 < int(start["predicted_steps_earliest"])
    assert result["events"][layout["pod"]]["max"] >= 1
    assert result["events"][layout["leaf"]]["oom_kill"] >= 1


def test_under_a_pod_level_limit_hidden_by_the_namespace_the_declared_one_binds_and_the_kill_is_announced(
    vm: Boot,
) -> None:
    # limitScope=pod on v2: the cgroup namespace shows no limit at all; the Downward API's figure is the pod's.
    name = "pod-scope"
    result, layout = result_of(vm, name), BY_NAME[name]
    (start,) = lines_of(result, "start")
    assert (start["limit_mib"], start["limit_scope"], start["limit_source"]) == ("128", "pod", "downward_api")
    assert start["cgroup"] == "v2:/sys/fs/cgroup"
    assert result["returncode"] == -9
    assert_killed_in_announced_range(start, len(lines_of(result, "step")))
    # The pod's limit fired, and the kill was the container's (its own memory.max is "max").
    assert result["events"][layout["pod"]]["max"] >= 1
    assert result["events"][layout["leaf"]]["oom_kill"] >= 1
    assert result["events"][layout["leaf"]]["max"] == 0


def test_memory_high_below_the_limit_throttles_from_the_predicted_step_then_the_kill_comes_at_the_limit(
    vm: Boot,
) -> None:
    result, layout = result_of(vm, "memory-high"), BY_NAME["memory-high"]
    (start,) = lines_of(result, "start")
    steps = lines_of(result, "step")
    assert start["memory_high_mib"] == "112"
    assert start["limit_mib"] == "128"
    throttled = [int(step["step"]) for step in steps if step["throttled"] == "true"]
    assert throttled, result["stdout"]
    assert throttled[0] == int(start["predicted_throttle_step"])
    first = steps[throttled[0] - 1]
    assert int(first["high_events"]) >= 1
    assert int(first["step_ms"]) > 0
    assert all(step["throttled"] == "false" and step["high_events"] == "0" for step in steps[: throttled[0] - 1])
    assert result["events"][layout["leaf"]]["high"] >= 1
    # Still killed, by the limit, in a step announced from the limit.
    assert result["returncode"] == -9
    assert_killed_in_announced_range(start, len(steps))
    assert result["events"][layout["leaf"]]["oom_kill"] >= 1


def test_swap_the_cgroup_may_use_is_reported_and_the_kill_comes_that_much_later(vm: Boot) -> None:
    result = result_of(vm, "swap")
    (start,) = lines_of(result, "start")
    steps = lines_of(result, "step")
    assert 255 * 1024 < result["swap_total_kib"] <= 256 * 1024  # the zram device less mkswap's header page
    assert start["swap_max_mib"] == "64"  # swap.max, not the 256 MiB that is on
    # It outlived its memory limit: more allocated than the limit, while the charge stayed under it.
    assert int(steps[-1]["allocated_mib"]) > int(start["limit_mib"])
    assert all(int(step["cgroup_usage_mib"]) <= 96 for step in steps)
    assert int(start["predicted_steps_earliest"]) > (96 - int(start["cgroup_usage_mib"])) // 16 + 1


def test_no_memory_high_or_swap_fields_where_none_applies(vm: Boot) -> None:
    result = result_of(vm, "flat")
    (start,) = lines_of(result, "start")
    assert result["swap_total_kib"] == 0  # the VM has no swap on: no swap_max_mib to report
    for key in ("memory_high_mib", "predicted_throttle_step", "swap_max_mib"):
        assert key not in start
    assert all("throttled" not in step for step in lines_of(result, "step"))


def test_the_log_reference_names_every_field_the_workload_wrote(vm: Boot) -> None:
    reference = (PROJECT / "docs" / "workload-log.md").read_text()
    documented = set(
        re.findall(
            r"`([a-z_0-9]+)`",
            "\n".join(line.split("|")[1] for line in reference.splitlines() if line.startswith("| `")),
        )
    )
    written: set[str] = set()
    for name in EXPECTED_LIMIT:
        for event in ("start", "step"):
            for line in lines_of(result_of(vm, name), event):
                written |= set(line) - {"event"}
    assert written <= documented, written - documented
