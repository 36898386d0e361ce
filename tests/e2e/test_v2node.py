"""A node on cgroup v2 (issue 32): Debian's own kernel under QEMU with the cluster's containerd and kubelet, joined
to the e2e control plane (tests/e2e/v2node/node.py). Its scenarios run in a thread beside other modules
(tests/e2e/v2scenarios.py); these tests judge what the thread collected, each case held to what verify predicts from
the hog's own start line on that node.

Every supported node OS runs cgroup v2, and from 1.35 the kubelet refuses v1 unless told: this is the node most users
have, and what differs there is the subject of this project.
"""

from __future__ import annotations

import pytest

from oomtools import verify
from tests.e2e.cluster import NODE, Cluster
from tests.e2e.support import fact, line
from tests.e2e.v2node.node import NAME, TAINT
from tests.e2e.v2scenarios import FLEET, GROUP, PSI_SERIES, SINGLE_PROCESS, Collected, V2Scenarios

# Where the thread has not run beside other modules, waiting for it is its whole run: over a test's default 300 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(960)]


@pytest.fixture(scope="module")
def v2(v2node: V2Scenarios) -> Collected:
    collected = v2node.wait()
    fact("v2node_ready_s", f"{collected.ready_s:.1f}")
    fact("v2node_kubelet_restarted_s", f"{collected.reconfigured_s:.1f}")
    for name, single_process in ((FLEET, False), (GROUP, False), (SINGLE_PROCESS, True)):
        judged = collected.judged.get(name)
        if judged is None:
            continue
        on_node = judged.nodes.get(NAME, {})
        line(
            f"node={NAME} cgroup={on_node.get('cgroup', 'v2')} single_process_oom_kill={str(single_process).lower()} "
            f"model={'single' if name == FLEET else 'supervised'} stack={name} "
            f"verdict={judged.verdict.get('verdict')} oom_kills={judged.verdict.get('oom_kills')} "
            f"worker_kills={judged.verdict.get('worker_kills')} restarts={judged.verdict.get('restarts')} "
            f"kill_s={judged.kill_seconds()} predicted_s={judged.predicted_seconds()}"
        )
    if collected.psi:
        last = collected.psi[-1]
        figures = " ".join(
            f"{key.removeprefix('container_pressure_')}={last[key]:g}" for key in PSI_SERIES if key in last
        )
        fact("v2node_psi", f"{figures} samples={len(collected.psi)}")
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


def test_the_kubelets_psi_series_follow_the_hogs_climb(v2: Collected) -> None:
    assert v2.psi, f"no PSI series for the hog's container in the v2 node's cAdvisor: {v2.psi_problems[:5]}"
    for name in PSI_SERIES:
        values = [sample[name] for sample in v2.psi if name in sample]
        assert values, f"{name} never read"
        assert values == sorted(values), f"{name} went down: {values}"
