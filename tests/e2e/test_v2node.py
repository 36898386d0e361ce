"""A node on cgroup v2 (issue 32): Debian's own kernel under QEMU with the cluster's containerd and kubelet, joined
to the e2e control plane (tests/e2e/v2node/node.py). Its scenarios run in a thread beside other modules
(tests/e2e/v2scenarios.py); these tests judge what the thread collected, each case held to what verify predicts from
the hog's own start line on that node.

Every supported node OS runs cgroup v2, and from 1.35 the kubelet refuses v1 unless told: this is the node most users
have, and what differs there is the subject of this project.
"""

from __future__ import annotations

import time

import pytest

from oomtools import verdict, verify
from tests.e2e.cluster import NODE, Cluster
from tests.e2e.support import fact, line
from tests.e2e.v2node.node import NAME, TAINT
from tests.e2e.v2scenarios import (
    FLEET,
    GROUP,
    LIMITED_SWAP,
    PSI_SERIES,
    SINGLE_PROCESS,
    SWAP_REQUEST_MIB,
    Collected,
    V2Scenarios,
)

MIB = 1024 * 1024
PAGE = 4096
# Each stack's model and whether the node's kubelet ran it with singleProcessOOMKill
RUNS = {FLEET: ("single", False), GROUP: ("supervised", False), SINGLE_PROCESS: ("supervised", True)}
RUNS[LIMITED_SWAP] = ("single", True)

# Where the thread has not run beside other modules, waiting for it is its whole run: over a test's default 300 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(960)]


@pytest.fixture(scope="module")
def v2(v2node: V2Scenarios) -> Collected:
    began = time.monotonic()
    collected = v2node.wait()
    fact("v2node_waited_s", f"{time.monotonic() - began:.1f}")  # what make e2e waited for the thread, at its end
    fact("v2node_ready_s", f"{collected.ready_s:.1f}")
    fact("v2node_kubelet_restarted_s", f"{collected.reconfigured_s:.1f}")
    for name, (model, single_process) in RUNS.items():
        judged = collected.judged.get(name)
        if judged is None:
            continue
        on_node = judged.nodes.get(NAME, {})
        swap = ""
        if name == LIMITED_SWAP:  # and the seconds verify moved the stack's prediction to by that swap
            moved = next((e for e in judged.lines if e.get("event") == "hog_start" and "predicted_seconds" in e), {})
            swap = f" qos=Burstable swap_mib={judged.verdict.get('swap_mib', 'none')}"
            swap += f" moved_s={moved.get('predicted_seconds', 'none')}"
        line(
            f"node={NAME} cgroup={on_node.get('cgroup', 'v2')} single_process_oom_kill={str(single_process).lower()} "
            f"model={model} stack={name}{swap} "
            f"verdict={judged.verdict.get('verdict')} oom_kills={judged.verdict.get('oom_kills')} "
            f"worker_kills={judged.verdict.get('worker_kills')} restarts={judged.verdict.get('restarts')} "
            f"kill_s={judged.kill_seconds()} predicted_s={judged.predicted_seconds()}"
        )
    for name, samples in collected.psi.items():
        last = samples[-1]
        figures = " ".join(
            f"{key.removeprefix('container_pressure_')}={last[key]:g}" for key in PSI_SERIES if key in last
        )
        fact("v2node_psi", f"stack={name} {figures} samples={len(samples)}")
    if collected.meminfo:
        fact(
            "v2node_swap",
            f"mem_total_mib={collected.meminfo['mem_total_bytes'] / MIB:.0f} "
            f"swap_total_mib={collected.meminfo['swap_total_bytes'] / MIB:.0f} "
            f"swap_used_max_mib={collected.swap_used.get(LIMITED_SWAP, 0) / MIB:.1f}",
        )
    assert not collected.error, collected.error[-6000:]
    return collected


def test_the_v2_node_joins_tainted_with_debians_kernel_and_the_clusters_kubelet(
    cluster: Cluster, v2: Collected
) -> None:
    assert v2.ready_s > 0
    node = cluster.node(NAME)
    info = node["status"]["nodeInfo"]
    assert info["kernelVersion"].endswith("-amd64"), info  # Debian's own kernel, not this machine's
    assert info["kubeletVersion"].startswith("v1.37")
    taints = [t for t in node["spec"].get("taints", []) if not t["key"].startswith("node.kubernetes.io/")]
    assert taints == [dict(zip(("key", "value", "effect"), TAINT, strict=True))]


def test_the_fleet_table_names_the_v2_nodes_cgroup_and_group_kill(v2: Collected) -> None:
    judged = v2.judged[FLEET]
    assert judged.code == verify.EXIT_AS_PREDICTED, v2.why(FLEET)
    on_node = judged.nodes[NAME]
    assert (on_node["cgroup"], on_node["oom_group"], on_node["swap"]) == ("v2", "1", "none")
    assert on_node["verdict"] == "as-predicted"
    assert on_node["happened"].startswith("OOM-killed")
    assert judged.nodes[NODE]["verdict"] == "not-selected"  # the stack selects the v2 node by its name


def test_supervised_on_v2_dies_whole_with_the_kubelets_default(v2: Collected) -> None:
    judged = v2.judged[GROUP]
    assert judged.code == verify.EXIT_AS_PREDICTED, v2.why(GROUP)
    assert int(judged.verdict["oom_kills"]) >= 1
    assert judged.verdict["worker_kills"] == "0"
    assert judged.verdict["supervised_end"] == "group-kill"
    groups = v2.cgroups[GROUP].values()
    assert groups, "no hog container's cgroup in the guest"
    assert {group["memory.oom.group"] for group in groups} == {"1"}


def test_supervised_on_v2_with_single_process_oom_kill_loses_only_its_worker(v2: Collected) -> None:
    judged = v2.judged[SINGLE_PROCESS]
    assert judged.code == verify.EXIT_AS_PREDICTED, v2.why(SINGLE_PROCESS)
    assert int(judged.verdict["worker_kills"]) >= 1
    assert (judged.verdict["oom_kills"], judged.verdict["restarts"]) == ("0", "0")
    assert judged.verdict["supervised_end"] == "worker-kill"
    groups = v2.cgroups[SINGLE_PROCESS].values()
    assert groups, "no hog container's cgroup in the guest"
    assert {group["memory.oom.group"] for group in groups} == {"0"}
    # The node has swap and LimitedSwap by then: a Guaranteed container gets none of it
    assert {group["memory.swap.max"] for group in groups} == {"0"}


def test_limited_swap_gives_a_burstable_hog_its_share_and_verify_moves_the_kill_out_by_it(
    v2: Collected, v2node: V2Scenarios
) -> None:
    judged = v2.judged[LIMITED_SWAP]
    assert judged.code == verify.EXIT_AS_PREDICTED, v2.why(LIMITED_SWAP)
    # The kubelet's LimitedSwap: the container's request over the node's memory, times the node's swap (in pages)
    share = SWAP_REQUEST_MIB * MIB / v2.meminfo["mem_total_bytes"] * v2.meminfo["swap_total_bytes"]
    expected = int(share) // PAGE * PAGE
    groups = v2.cgroups[LIMITED_SWAP].values()
    assert groups, "no hog container's cgroup in the guest"
    assert {int(group["memory.swap.max"]) for group in groups} == {expected}
    # The hog read it, verify judged by it, and the kernel swapped before it killed
    starts = [entry for entry in judged.lines if entry.get("event") == "hog_start"]
    assert starts, v2.why(LIMITED_SWAP)
    assert {entry.get("swap_mib") for entry in starts} == {str(expected // MIB)}
    assert judged.verdict["swap_mib"] == str(expected // MIB)
    assert v2.swap_used.get(LIMITED_SWAP, 0) > 0, "memory.swap.current never above 0 while the hog climbed"
    # Killed later than the same stack without swap could be: past the stack's own latest step
    deaths = [entry for entry in judged.lines if entry.get("event") == "death"]
    assert deaths, v2.why(LIMITED_SWAP)
    without_swap = int(v2node.rendered[LIMITED_SWAP].exports["predictedOomKillStep"]["latest"])
    assert verdict.kill_step(deaths[0]["termination_message"]) > without_swap, v2.why(LIMITED_SWAP)


def test_the_kubelets_psi_series_follow_the_hogs_climb_and_show_the_swapping_hogs_stall(v2: Collected) -> None:
    for stack in (GROUP, LIMITED_SWAP):
        samples = v2.psi.get(stack, [])
        assert samples, f"no PSI series for {stack}'s hog in the v2 node's cAdvisor: {v2.psi_problems[:5]}"
        for name in PSI_SERIES:
            values = [sample[name] for sample in samples if name in sample]
            assert values, f"{name} never read for {stack}"
            assert values == sorted(values), f"{name} went down for {stack}: {values}"
    # Past its limit the swapping hog waits on reclaim (its pages compressed to swap): the stall PSI is there to show
    stalled = [sample.get(PSI_SERIES[0], 0.0) for sample in v2.psi[LIMITED_SWAP]]
    assert max(stalled) > 0, f"the swapping hog never stalled: {stalled}"
