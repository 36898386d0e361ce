"""make verify's fleet check (scope=node), its parts without a cluster: which nodes the DaemonSet's pod may go to,
what a node is, and the verdict per node from what was observed on it."""

from __future__ import annotations

import dataclasses
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
    # The watch has its evidence once every selected node has its kill, and its hog's start line (the swap it says
    # moves the steps), or the scheduler's reason.
    assert not scope.complete(observed)
    observed.starts = {"pod-a": START, "pod-late": START}
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


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "a", "value": "x"}, {"key": "a", "value": "x", "effect": "NoSchedule"}, True),  # Equal by default
        ({"key": "a", "value": "x"}, {"key": "a", "value": "y", "effect": "NoSchedule"}, False),
        ({"key": "a"}, {"key": "a", "effect": "NoSchedule"}, True),  # no value on either side: equal
        ({"key": "a"}, {"key": "a", "value": "x", "effect": "NoSchedule"}, False),
        ({"key": "a", "value": "x", "operator": "Equal"}, {"key": "a", "effect": "NoSchedule"}, False),
    ],
)
def test_an_equal_toleration_is_the_default_and_compares_values_a_missing_one_as_empty(
    toleration: dict[str, str], taint: dict[str, str], tolerated: bool
) -> None:
    assert fleet.tolerates(toleration, taint) is tolerated


def test_a_noexecute_taint_keeps_the_pod_off_and_a_bare_node_takes_it() -> None:
    evicting = {"key": "maintenance", "effect": "NoExecute"}
    assert fleet.selection(node("a", taints=[evicting]), POD_SPEC) == "taint maintenance:NoExecute"
    assert fleet.selection({"metadata": {"name": "bare"}}, {}) is None  # no labels, no spec: nothing keeps it off


UNKNOWN_NODE = {"kernel": "?", "kubelet": "?", "runtime": "?", "allocatable_memory": "?"}
KNOWN_NODE = {"kernel": "6.1.0", "kubelet": "v1.37.2", "runtime": "containerd://2.4.2", "allocatable_memory": "2000Mi"}


@pytest.mark.parametrize(
    ("start", "told"),
    [
        (None, {"cgroup": "?", "driver": "?", "oom_group": "?", "memory_high": "?", "swap": "?"}),
        (
            {**START, "memory_high_mib": "96", "swap_max_mib": "0"},
            {"cgroup": "v2", "driver": "systemd", "oom_group": "1", "memory_high": "96", "swap": "0"},
        ),
        (  # a systemd slice whose container's cgroup is no .scope (an older containerd's)
            {"cgroup": "v2:/kubepods.slice/kubepods-pod1.slice/abc"},
            {"cgroup": "v2", "driver": "systemd", "oom_group": "?", "memory_high": "none", "swap": "none"},
        ),
        (  # a systemd scope outside any slice (a runtime that made its own scope)
            {"cgroup": "v2:/cri-containerd-abc.scope", "oom_group": "1"},
            {"cgroup": "v2", "driver": "systemd", "oom_group": "1", "memory_high": "none", "swap": "none"},
        ),
        (
            {"cgroup": "v1:/kubepods/burstable/pod1/abc"},
            {"cgroup": "v1", "driver": "cgroupfs", "oom_group": "n/a", "memory_high": "none", "swap": "none"},
        ),
        ({"event": "start"}, {"cgroup": "?", "driver": "?", "oom_group": "?", "memory_high": "none", "swap": "none"}),
    ],
)
def test_each_fact_of_a_node_as_the_fleet_table_shows_it(start: dict[str, str] | None, told: dict[str, str]) -> None:
    assert fleet.facts(node("a"), start) == {**KNOWN_NODE, **told}
    assert fleet.facts({"metadata": {"name": "a"}}, start) == {**UNKNOWN_NODE, **told}


def test_each_nodes_verdict_says_what_happened_and_what_the_node_is() -> None:
    prediction = verify.Prediction(True, False, 6, 8, 1, KillRange(7, 8, 8, 0))
    observed = verify.Observed()
    # Two kills on node a, seen in the other order; one on node early, before the announced steps and late.
    observed.deaths = {"2": oom("pod-a", "2", 8), "1": oom("pod-a", "1", 7), "3": oom("pod-early", "3", 30, step=3)}
    earlier = datetime.timedelta(seconds=60)
    observed.deaths["1"] = dataclasses.replace(
        observed.deaths["1"],
        started_at=observed.deaths["1"].started_at - earlier,
        finished_at=observed.deaths["1"].finished_at - earlier,
    )
    observed.pod_nodes = {"pod-a": "a", "pod-early": "early"}
    nodes = [node("a"), node("early"), node("idle"), node("web", {"pool": "web"})]
    verdicts = fleet.FleetScope(nodes, POD_SPEC, prediction, 1).judge(observed, {"a": START})
    assert [(v.node, v.verdict, v.happened) for v in verdicts] == [
        ("a", fleet.AS_PREDICTED, "OOM-killed 2 times, at 7,8 s from start"),
        (
            "early",
            fleet.DIFFERS,
            "each kill in an announced step (predicted_steps=7..8 seen=4(early)); "
            "each kill on time (predicted=6..8s seen=30)",
        ),
        ("idle", fleet.NOT_SCHEDULED, "not scheduled: no pod of the DaemonSet was seen there"),
        ("web", fleet.NOT_SELECTED, "not selected: nodeSelector pool=oom"),
    ]
    unran = {"cgroup": "?", "driver": "?", "oom_group": "?", "memory_high": "?", "swap": "?"}
    assert [v.facts for v in verdicts] == [
        fleet.facts(node("a"), START),
        {**KNOWN_NODE, **unran},
        {**KNOWN_NODE, **unran},
        {**KNOWN_NODE, **unran},
    ]
    assert [c.name for c in verdicts[0].checks] == [c.name for c in verdicts[1].checks]
    assert [c.ok for c in verdicts[0].checks] == [True] * 4  # kills, no other death, steps, time
    assert verdicts[2].checks == verdicts[3].checks == []


def test_a_held_node_says_so() -> None:
    held = verify.Prediction(False, False, None, None, 1)
    observed = verify.Observed()
    observed.pod_nodes = {"pod-a": "a"}
    observed.running = {("pod-a", "oom-killer")}
    (verdict_of_a,) = fleet.FleetScope([node("a")], POD_SPEC, held, 1).judge(observed, {})
    assert (verdict_of_a.verdict, verdict_of_a.happened) == (fleet.AS_PREDICTED, "held, as predicted")


V1_SUPERVISOR = {"event": "start", "process_model": "supervised", "cgroup": "v1:/kubepods/burstable/pod1/abc"}
V2_SUPERVISOR = {**START, "process_model": "supervised"}  # oom_group=1: the kubelet's default since 1.28


def supervised_fleet() -> verify.Observed:
    """A supervised DaemonSet on two nodes: on v1 its worker killed alone, the container running on; on v2 (with
    memory.oom.group=1) the container OOM-killed, worker and supervisor together."""
    observed = verify.Observed()
    observed.pod_nodes = {"pod-v1": "v1", "pod-v2": "v2"}
    observed.pods_seen = {"pod-v1", "pod-v2"}
    at = datetime.datetime(2026, 11, 30, 12, 0, 7, tzinfo=datetime.UTC)
    fields = {"event": "child_exit", "signal": "SIGKILL"}
    observed.worker_kills = {("pod-v1", "oom-killer", "7"): verify.WorkerKill("pod-v1", "oom-killer", at, fields, "w")}
    observed.running = {("pod-v1", "oom-killer")}
    observed.restarts = {("pod-v1", "oom-killer"): 0, ("pod-v2", "oom-killer"): 1}
    observed.deaths = {"2": oom("pod-v2", "2", 7)}
    observed.starts = {"pod-v1": V1_SUPERVISOR, "pod-v2": V2_SUPERVISOR}
    return observed


def test_a_supervised_fleet_judges_each_node_by_its_own_hogs_start_line() -> None:
    prediction = verify.Prediction(True, True, 6, 8, 1, KillRange(7, 8, 8, 0))
    observed = supervised_fleet()
    scope = fleet.FleetScope([node("v1"), node("v2")], POD_SPEC, prediction, 1)
    starts = {"v1": V1_SUPERVISOR, "v2": V2_SUPERVISOR}
    verdicts = scope.judge(observed, starts)
    assert [(v.node, v.verdict, v.happened) for v in verdicts] == [
        ("v1", fleet.AS_PREDICTED, "worker killed 1 times, the container lived on (oom_group=none)"),
        ("v2", fleet.AS_PREDICTED, "OOM-killed 1 times with its supervisor (oom_group=1), at 7 s from start"),
    ]
    assert [c.name for c in verdicts[0].checks] == ["the kernel kills the worker", "the container lives on"]
    assert verdicts[1].checks[0].name == "1 OOM kills (OOMKilled, exit code 137)"
    assert [(v.facts["cgroup"], v.facts["oom_group"]) for v in verdicts] == [("v1", "n/a"), ("v2", "1")]
    assert scope.complete(observed)
    # Each node is held to its own line: swapped, neither is as predicted, and the watch waits on.
    observed.starts = {"pod-v1": V2_SUPERVISOR, "pod-v2": V1_SUPERVISOR}
    assert [v.verdict for v in scope.judge(observed, starts)] == [fleet.DIFFERS, fleet.DIFFERS]
    assert not scope.complete(observed)


def test_a_supervised_node_whose_start_line_was_not_read_checked_nothing_and_is_waited_for() -> None:
    prediction = verify.Prediction(True, True, 6, 8, 1, KillRange(7, 8, 8, 0))
    observed = supervised_fleet()
    del observed.starts["pod-v2"]
    scope = fleet.FleetScope([node("v1"), node("v2")], POD_SPEC, prediction, 1)
    assert not scope.complete(observed)
    v1, v2 = scope.judge(observed, {})
    assert v1.verdict == fleet.AS_PREDICTED
    assert v2.verdict == fleet.UNJUDGED
    assert v2.happened.startswith("the hog's start line says how a kill ends (supervised_end=unread: no start line")
    assert v2.item.status == verdict.NOTHING_CHECKED
    assert fleet.fleet_item([v1, v2]).status == verdict.NOTHING_CHECKED
    # A node with no kill at all differs, whatever its line would have said.
    observed.deaths = {}
    assert scope.judge(observed, {})[1].verdict == fleet.DIFFERS


def test_a_node_whose_pods_lines_differ_says_what_happened_to_each() -> None:
    # The kubelet's singleProcessOOMKill turned on between two of the DaemonSet's pods on one node: the first pod's
    # container killed whole, the second's worker alone; each as its own line predicts.
    prediction = verify.Prediction(True, True, 6, 8, 1, KillRange(7, 8, 8, 0))
    observed = supervised_fleet()
    observed.pod_nodes = {"pod-v1": "v2", "pod-v2": "v2"}
    observed.starts = {"pod-v1": {**V2_SUPERVISOR, "oom_group": "0"}, "pod-v2": V2_SUPERVISOR}
    (on_v2,) = fleet.FleetScope([node("v2")], POD_SPEC, prediction, 1).judge(observed, {})
    assert (on_v2.verdict, on_v2.happened) == (
        fleet.AS_PREDICTED,
        "worker killed 1 times, the container lived on (oom_group=0); "
        "OOM-killed 1 times with its supervisor (oom_group=1), at 7 s from start",
    )


def test_each_node_is_judged_by_the_swap_its_own_hogs_start_line_says() -> None:
    # A v2 node whose kubelet gives the pod 64 MiB of swap (LimitedSwap) and a v1 node with none: in 16 MiB steps
    # the swap moves the stack's 7..8 to 10..13 (6..8 s to 9..13 s) there, and nowhere else.
    prediction = verify.Prediction(True, False, 6, 8, 1, KillRange(7, 8, 8, 0), increment_mib=16, interval_ms=1000)
    observed = verify.Observed()
    observed.deaths = {"1": oom("pod-swap", "1", 10, step=10), "2": oom("pod-v1", "2", 7)}
    observed.pod_nodes = {"pod-swap": "swap", "pod-v1": "v1"}
    observed.pods_seen = {"pod-swap", "pod-v1"}
    swap_start = {**START, "swap_max_mib": "64"}
    v1_start = {"event": "start", "cgroup": "v1:/kubepods/burstable/pod2/c"}
    observed.starts = {"pod-swap": swap_start, "pod-v1": v1_start}
    scope = fleet.FleetScope([node("swap"), node("v1")], POD_SPEC, prediction, 1)
    verdicts = scope.judge(observed, {"swap": swap_start, "v1": v1_start})
    assert [(v.node, v.verdict, v.facts["swap"]) for v in verdicts] == [
        ("swap", fleet.AS_PREDICTED, "64"),
        ("v1", fleet.AS_PREDICTED, "none"),
    ]
    assert verdicts[0].checks[0].detail == "oom_kills=1 swap_mib=64"
    assert "predicted_steps=10..13 seen=11(2/4)" in [c.detail for c in verdicts[0].checks]
    assert scope.complete(observed)
    # Each held to the other's line: the kill with swap is late for a node without, the other early for one with.
    observed.starts = {"pod-swap": v1_start, "pod-v1": swap_start}
    swapped = scope.judge(observed, {})
    assert [v.verdict for v in swapped] == [fleet.DIFFERS, fleet.DIFFERS]
    assert "seen=11(late)" in swapped[0].happened
    assert "seen=8(early)" in swapped[1].happened
