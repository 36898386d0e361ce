"""The fleet check (scope=node): one verdict per node and one for the fleet.

For each node of the cluster: whether the DaemonSet's pod may go there at all (its nodeSelector, and the node's
NoSchedule and NoExecute taints against its tolerations and those the DaemonSet controller adds), what the node is
(kernel, kubelet and runtime from the node object; cgroup version and driver, `memory.oom.group`, `memory.high` and
swap from the hog's own start line), and what happened to its hog, judged as for a single pod (a supervised one by its
own start line: the worker killed alone on cgroup v1, the group on a v2 node with memory.oom.group=1): as predicted,
killed early or late, held, or not scheduled and why (`Insufficient memory` where the node's allocatable cannot hold
the request). A node the settings do not select is "not selected", never "passed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from oomtools.verdict import FAILED, NOTHING_CHECKED, PASSED, SKIPPED, Item, over
from oomtools.verify.judge import checks_for, evidence_complete, oom_groups, resolved
from oomtools.verify.prediction import GROUP_KILL, WORKER_KILL

if TYPE_CHECKING:
    from oomtools.verify.observe import Observed
    from oomtools.verify.prediction import Prediction

# What the DaemonSet controller lets each of its pods tolerate (pkg/controller/daemon/util), besides the template's.
DAEMONSET_TOLERATIONS: Final = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)

AS_PREDICTED: Final = "as-predicted"
NOT_SELECTED: Final = "not-selected"
NOT_SCHEDULED: Final = "not-scheduled"
DIFFERS: Final = "not-as-predicted"
# Its hog ran, but nothing held it to the prediction (a supervised hog's start line not read, every tmpfs kill at
# start): never a pass.
UNJUDGED: Final = "nothing-checked"


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Kubernetes' rule: same effect (or none given), and the key with Exists (no key: every taint), or key and value
    with Equal."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return bool(toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", ""))


def selection(node: dict[str, Any], pod_spec: dict[str, Any]) -> str | None:
    """Why the DaemonSet's pod may not go to this node (None: it may): a nodeSelector label the node lacks, or a
    taint that keeps pods off that no toleration takes."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    tolerations = [*(pod_spec.get("tolerations") or []), *DAEMONSET_TOLERATIONS]
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(tolerates(t, taint) for t in tolerations):
            value = f"={taint['value']}" if taint.get("value") else ""
            return f"taint {taint['key']}{value}:{taint['effect']}"
    return None


def facts(node: dict[str, Any], start: dict[str, str] | None) -> dict[str, str]:
    """What the node is: from its object, and from the hog's start line where one ran there."""
    status = node.get("status") or {}
    info, allocatable = status.get("nodeInfo") or {}, status.get("allocatable") or {}
    found = {
        "kernel": str(info.get("kernelVersion", "?")),
        "kubelet": str(info.get("kubeletVersion", "?")),
        "runtime": str(info.get("containerRuntimeVersion", "?")),
        "allocatable_memory": str(allocatable.get("memory", "?")),
    }
    if start is None:
        return {**found, "cgroup": "?", "driver": "?", "oom_group": "?", "memory_high": "?", "swap": "?"}
    version, _, path = start.get("cgroup", "?").partition(":")
    # systemd's driver puts a container in a .scope under .slices; cgroupfs in plain folders.
    driver = "systemd" if ".slice" in path or path.endswith(".scope") else "cgroupfs" if path else "?"
    return {
        **found,
        "cgroup": version,
        "driver": driver,
        "oom_group": start.get("oom_group", "n/a" if version == "v1" else "?"),
        "memory_high": start.get("memory_high_mib", "none"),
        "swap": start.get("swap_max_mib", "none"),
    }


@dataclass
class NodeVerdict:
    node: str
    verdict: str  # AS_PREDICTED, NOT_SELECTED, NOT_SCHEDULED, DIFFERS or UNJUDGED
    happened: str
    facts: dict[str, str] = field(default_factory=dict)
    checks: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.item.ok

    @property
    def item(self) -> Item:
        """The node in the result tree: its checks beneath it; a node the settings do not select is skipped."""
        status = {AS_PREDICTED: PASSED, NOT_SELECTED: SKIPPED, UNJUDGED: NOTHING_CHECKED}.get(self.verdict, FAILED)
        return Item(f"node {self.node}", status, f"{self.verdict}: {self.happened}", list(self.checks))


def judge(
    nodes: list[dict[str, Any]],
    pod_spec: dict[str, Any],
    observed: Observed,
    pods_on: dict[str, set[str]],
    unscheduled: dict[str, str],
    starts: dict[str, dict[str, str]],
    prediction: Prediction,
    wanted_kills: int,
) -> list[NodeVerdict]:
    """A verdict for each node: `pods_on` maps a node to the stack's pods bound there, `unscheduled` a node to why
    its pod waits (the scheduler's message), `starts` a node to its hog's start line."""
    verdicts = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        name = str(node["metadata"]["name"])
        about = facts(node, starts.get(name))
        why_not = selection(node, pod_spec)
        if why_not is not None:
            verdicts.append(NodeVerdict(name, NOT_SELECTED, f"not selected: {why_not}", about))
            continue
        if name in unscheduled or not pods_on.get(name):
            reason = unscheduled.get(name, "no pod of the DaemonSet was seen there")
            verdicts.append(NodeVerdict(name, NOT_SCHEDULED, f"not scheduled: {reason}", about))
            continue
        on_node = observed.in_pods(pods_on[name])
        checks = checks_for(prediction, on_node, wanted_kills, [])
        failed = [check for check in checks if not check.ok]
        if not failed:
            happened = _what_happened(prediction, on_node)
            verdicts.append(NodeVerdict(name, AS_PREDICTED, happened, about, checks))
        else:
            happened = "; ".join(f"{check.name} ({check.detail})" for check in failed)
            unjudged = all(check.status == NOTHING_CHECKED for check in failed)
            verdicts.append(NodeVerdict(name, UNJUDGED if unjudged else DIFFERS, happened, about, checks))
    return verdicts


def fleet_item(verdicts: list[NodeVerdict]) -> Item:
    """The fleet in the result tree: its nodes beneath it. Where the settings select no node, nothing was checked:
    the item says so and which node was left out why, and the verdict is no pass."""
    selected = [v for v in verdicts if v.verdict != NOT_SELECTED]
    if selected:
        detail = f"{len(selected)} of {len(verdicts)} nodes selected"
    else:
        detail = f"no node of {len(verdicts)} is selected: " + ", ".join(
            f"{v.node} ({v.happened.removeprefix('not selected: ')})" for v in verdicts
        )
    return over("the nodes the settings select", (v.item for v in verdicts), detail, group=True)


def _what_happened(prediction: Prediction, observed: Observed) -> str:
    if not prediction.kills:
        return "held, as predicted"
    return "; ".join(_happened(part_prediction, part) for part_prediction, part in resolved(prediction, observed))


def _happened(prediction: Prediction, observed: Observed) -> str:
    """What happened to the node's pods, as their start line predicted it (the oom_group it read)."""
    oom_group = oom_groups(observed)
    if prediction.supervised_end == WORKER_KILL:
        return f"worker killed {len(observed.worker_kills)} times, the container lived on (oom_group={oom_group})"
    oom = sorted((d for d in observed.deaths.values() if d.reason == "OOMKilled"), key=lambda d: d.finished_at)
    seconds = ",".join(f"{d.seconds_from_start:g}" for d in oom)
    group = f" with its supervisor (oom_group={oom_group})" if prediction.supervised_end == GROUP_KILL else ""
    return f"OOM-killed {len(oom)} times{group}, at {seconds} s from start"


@dataclass
class FleetScope:
    """A DaemonSet's run: the cluster's nodes, the pod template's spec (as the API's JSON), the prediction per pod."""

    nodes: list[dict[str, Any]]
    pod_spec: dict[str, Any]
    prediction: Prediction
    wanted_kills: int

    def selected(self) -> list[str]:
        return [str(n["metadata"]["name"]) for n in self.nodes if selection(n, self.pod_spec) is None]

    def pods_on(self, observed: Observed) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for pod, node in observed.pod_nodes.items():
            found.setdefault(node, set()).add(pod)
        return found

    def unscheduled(self, observed: Observed) -> dict[str, str]:
        return {observed.pod_nodes[pod]: why for pod, why in observed.unscheduled.items() if pod in observed.pod_nodes}

    def complete(self, observed: Observed) -> bool:
        """Every selected node has its evidence: its hog's, as for one pod, or the scheduler's reason it waits."""
        pods_on, unscheduled = self.pods_on(observed), self.unscheduled(observed)
        return all(
            name in unscheduled
            or (
                bool(pods_on.get(name))
                and evidence_complete(self.prediction, self.wanted_kills, observed.in_pods(pods_on[name]))
            )
            for name in self.selected()
        )

    def judge(self, observed: Observed, starts: dict[str, dict[str, str]]) -> list[NodeVerdict]:
        return judge(
            self.nodes,
            self.pod_spec,
            observed,
            self.pods_on(observed),
            self.unscheduled(observed),
            starts,
            self.prediction,
            self.wanted_kills,
        )
