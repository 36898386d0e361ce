"""make verify's fleet check (scope=node), its parts without a cluster: which nodes the DaemonSet's pod may go to,
what a node is, and the verdict per node from what was observed on it."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from oomtools import verdict, verify
from oomtools.verify import fleet, judge, report
from workload.predict import KillRange

POD_SPEC: dict[str, Any] = {
    "nodeSelector": {"pool": "oom"},
    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
}
START = {
    "event": "start",
    "cgroup": "v2:/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope",
    "oom_group": "1",
}


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pool": "oom", **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {
            "nodeInfo": {
                "kernelVersion": "6.1.0",
                "kubeletVersion": "v1.37.2",
                "containerRuntimeVersion": "containerd://2.4.2",
            },
            "allocatable": {"memory": "2000Mi"},
        },
    }


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "a", "operator": "Exists"}, {"key": "a", "value": "x", "effect": "NoSchedule"}, True),
        ({"key": "a", "operator": "Equal", "value": "x"}, {"key": "a", "value": "x", "effect": "NoExecute"}, True),
        ({"key": "a", "operator": "Equal", "value": "y"}, {"key": "a", "value": "x", "effect": "NoSchedule"}, False),
        ({"key": "a", "operator": "Exists", "effect": "NoSchedule"}, {"key": "a", "effect": "NoExecute"}, False),
        ({"operator": "Exists"}, {"key": "anything", "effect": "NoSchedule"}, True),  # no key: every taint
        ({"key": "b", "operator": "Exists"}, {"key": "a", "effect": "NoSchedule"}, False),
    ],
)
def test_a_toleration_takes_a_taint_as_kubernetes_matches_them(
    toleration: dict[str, str], taint: dict[str, str], tolerated: bool
) -> None:
    assert fleet.tolerates(toleration, taint) is tolerated


def test_a_node_is_selected_by_the_pods_node_selector_and_its_taints_against_the_tolerations() -> None:
    assert fleet.selection(node("a"), POD_SPEC) is None
    assert fleet.selection(node("b", {"pool": "web"}), POD_SPEC) == "nodeSelector pool=oom"
    gpu = {"key": "gpu", "value": "yes", "effect": "NoSchedule"}
    assert fleet.selection(node("c", taints=[gpu]), POD_SPEC) == "taint gpu=yes:NoSchedule"
    assert fleet.selection(node("d", taints=[{"key": "dedicated", "effect": "NoExecute"}]), POD_SPEC) is None
    # PreferNoSchedule keeps nothing off; a cordoned node's taint the DaemonSet controller tolerates itself.
    assert fleet.selection(node("e", taints=[{**gpu, "effect": "PreferNoSchedule"}]), POD_SPEC) is None
    cordoned = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    assert fleet.selection(node("f", taints=[cordoned]), POD_SPEC) is None


def test_what_a_node_is_comes_from_its_object_and_its_hogs_start_line() -> None:
    about = fleet.facts(node("a"), START)
    assert about["kernel"] == "6.1.0"
    assert about["kubelet"] == "v1.37.2"
    assert about["runtime"] == "containerd://2.4.2"
    assert (about["cgroup"], about["driver"], about["oom_group"]) == ("v2", "systemd", "1")
    assert (about["memory_high"], about["swap"]) == ("none", "none")
    cgroupfs = fleet.facts(node("a"), {"cgroup": "v1:/kubepods/burstable/pod1/abc"})
    assert (cgroupfs["cgroup"], cgroupfs["driver"], cgroupfs["oom_group"]) == ("v1", "cgroupfs", "n/a")
    assert fleet.facts(node("a"), None)["cgroup"] == "?"  # no hog ran there


def oom(pod: str, container_id: str, seconds: float, step: int = 7) -> verify.Death:
    started = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
    return verify.Death(
        pod, "oom-killer", container_id, "OOMKilled", 137, f"event=step step={step} allocated_mib=112", started,
        started + datetime.timedelta(seconds=seconds), 1,
    )  # fmt: skip


def test_each_node_gets_its_own_verdict_and_a_node_that_cannot_run_it_says_why() -> None:
    prediction = verify.Prediction(True, False, 6, 8, 1, KillRange(7, 8, 8, 0))
    observed = verify.Observed()
    observed.deaths = {"1": oom("pod-a", "1", 7), "2": oom("pod-late", "2", 30)}
    observed.pod_nodes = {"pod-a": "a", "pod-late": "late", "pod-full": "full"}
    observed.unscheduled = {"pod-full": "0/4 nodes are available: 1 Insufficient memory."}
    nodes = [node("a"), node("late"), node("full"), node("gpu", taints=[{"key": "gpu", "effect": "NoSchedule"}])]
    scope = fleet.FleetScope(nodes, POD_SPEC, prediction, 1)
    verdicts = {v.node: v for v in scope.judge(observed, {"a": START})}
    assert verdicts["a"].verdict == fleet.AS_PREDICTED
    assert verdicts["a"].happened == "OOM-killed 1 times, at 7 s from start"
    assert verdicts["late"].verdict == fleet.DIFFERS
    assert "each kill on time" in verdicts["late"].happened
    assert verdicts["full"].verdict == fleet.NOT_SCHEDULED
    assert "Insufficient memory" in verdicts["full"].happened
    assert verdicts["gpu"].verdict == fleet.NOT_SELECTED
    assert verdicts["gpu"].ok  # not selected is what the settings ask, never a pass nor a failure of the node
    assert not verdicts["full"].ok
    assert not verdicts["late"].ok
    # The watch has its evidence once every selected node has its kill or the scheduler's reason.
    assert scope.complete(observed)
    del observed.deaths["1"]
    assert not scope.complete(observed)


def test_the_fleet_table_is_aligned_a_row_per_node() -> None:
    verdicts = [
        fleet.NodeVerdict("a", fleet.AS_PREDICTED, "OOM-killed 1 times", fleet.facts(node("a"), START)),
        fleet.NodeVerdict(
            "node-two", fleet.NOT_SELECTED, "not selected: taint gpu:NoSchedule", fleet.facts(node("b"), None)
        ),
    ]
    rows = report.fleet_table(verdicts)
    assert rows[0].startswith("node ")
    assert len(rows) == 3
    for column in ("verdict", "kernel", "what happened"):
        offset = rows[0].index(column)
        assert all(row[offset - 1] == " " for row in rows[1:])  # every row has a column break there
    assert rows[2].split()[1] == fleet.NOT_SELECTED


def test_a_fleet_whose_settings_select_no_node_checked_nothing_and_is_no_pass() -> None:
    prediction = verify.Prediction(True, False, 6, 8, 1, KillRange(7, 8, 8, 0))
    nodes = [node("web", {"pool": "web"}), node("gpu", taints=[{"key": "gpu", "effect": "NoSchedule"}])]
    scope = fleet.FleetScope(nodes, POD_SPEC, prediction, 1)
    observed = verify.Observed()
    assert scope.complete(observed)  # nothing to wait for: no node to watch
    verdicts = scope.judge(observed, {})
    assert [v.verdict for v in verdicts] == [fleet.NOT_SELECTED, fleet.NOT_SELECTED]
    item = fleet.fleet_item(verdicts)
    assert item.status == verdict.NOTHING_CHECKED
    assert item.detail == "no node of 2 is selected: gpu (taint gpu:NoSchedule), web (nodeSelector pool=oom)"
    tree = judge.verdict([item])
    assert tree.status == verdict.NOTHING_CHECKED
    # Written as a check of its own (the nodes under it, as before), failing in the JUnit report.
    assert [case.name for case in tree.cases()] == ["the nodes the settings select", "node gpu", "node web"]
    assert [case.ok for case in tree.cases()] == [False, True, True]


def test_a_fleet_with_a_node_selected_is_judged_by_its_nodes() -> None:
    as_predicted = fleet.NodeVerdict("a", fleet.AS_PREDICTED, "OOM-killed 1 times")
    left_out = fleet.NodeVerdict("b", fleet.NOT_SELECTED, "not selected: nodeSelector pool=oom")
    late = fleet.NodeVerdict("c", fleet.DIFFERS, "each kill on time")
    assert fleet.fleet_item([as_predicted, left_out]).status == verdict.PASSED
    assert fleet.fleet_item([as_predicted, left_out]).detail == "1 of 2 nodes selected"
    assert fleet.fleet_item([as_predicted, late]).status == verdict.FAILED
    # a group that checked something is written as its nodes alone
    assert [c.name for c in judge.verdict([fleet.fleet_item([as_predicted, left_out])]).cases()] == ["node a", "node b"]
