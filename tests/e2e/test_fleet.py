"""The fleet check on two real nodes: scope=node runs a hog on each node the settings select, and make verify gives
one verdict per node and one for the fleet.

A second node joins the test cluster for this module only, made from the same recipe as the first (its own
containerd and kubelet, root folders, cgroup root, mount namespace and address on the bridge), and made to differ
as a node pool does: a taint, and systemReserved memory that leaves room for one hog of the dev stack's 128 MiB
limit and not for one of 512 MiB. Three stacks run at once, each judged by make verify:

- the dev stack, tolerating the taint: both nodes' hogs are killed as predicted;
- the same with a 512 MiB limit: the second node's hog waits, "Insufficient memory", and the fleet differs;
- the dev stack without the toleration: the second node is "not selected", and the fleet is as predicted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest
from kubernetes import client

from oomtools import verify
from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import stack_config
from tests.e2e.cluster import Cluster
from tests.e2e.harness.nodes import Node
from tests.e2e.support import (
    Judged,
    apply_in_dependency_order,
    fact,
    line,
    render_for_the_node,
    verify_stack,
    workload_archive,
)

pytestmark = pytest.mark.e2e

TAINT = ("oom-killer.test/pool", "tainted", "NoSchedule")
TOLERATION = "oom-killer.test/pool=tainted:NoSchedule"
ALLOCATABLE_MIB = 320  # on the second node: a 128 MiB hog fits, a 512 MiB one does not
SECOND = "oom-killer-e2e-2"

# name: settings beyond the dev stack's, and what the fleet's verdict must be
CASES: dict[str, tuple[dict[str, str], str]] = {
    "fleet-tolerated": ({"tolerations": TOLERATION}, "as-predicted"),
    "fleet-too-big": ({"tolerations": TOLERATION, "memoryLimitMb": "512"}, "not-as-predicted"),
    "fleet-untolerated": ({}, "as-predicted"),
}


@pytest.fixture(scope="module")
def second_node(cluster: Cluster) -> Iterator[Node]:
    started = time.monotonic()
    with cluster.pool(SECOND, (TAINT,), ALLOCATABLE_MIB) as node:
        fact("fleet_second_node_ready_s", f"{time.monotonic() - started:.1f}")
        yield node


@pytest.fixture(scope="module")
def fleet(cluster: Cluster, second_node: Node, engine: docker.DockerClient) -> Iterator[dict[str, Judged]]:
    assert second_node.spec.name == SECOND
    rendered = {
        name: render_for_the_node({**stack_config("dev"), **settings, "scope": "node", "namespace": name}, name)
        for name, (settings, _) in CASES.items()
    }
    tag = build_image(engine, declared_pod(next(iter(rendered.values()))))
    cluster.load_image(workload_archive(engine, tag))  # into both nodes, as kind load does
    api = cluster.api()
    for stack in rendered.values():
        apply_in_dependency_order(api, stack)
    with ThreadPoolExecutor(max_workers=len(rendered)) as pool:
        running = {name: pool.submit(verify_stack, cluster, stack) for name, stack in rendered.items()}
        judged = {name: future.result(timeout=330) for name, future in running.items()}
    for name, result in judged.items():
        fact(f"{name} fleet_verdict", f"{result.verdict.get('verdict')} code={result.code}")
        for row in result.err.splitlines():
            if row.startswith("verify: node ") or row.startswith(("verify: oom-killer-e2e",)):
                line(f"fleet stack={name} | {row.removeprefix('verify: ')}")
        for node, entry in result.nodes.items():
            line(f"fleet_nodes={len(result.nodes)} stack={name} node={node} verdict={entry['verdict']}")
    yield judged
    core = client.CoreV1Api(api)
    for name in rendered:
        core.delete_namespace(name)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and set(rendered) & _namespaces(core):
        time.sleep(1)


def _namespaces(core: client.CoreV1Api) -> set[str]:
    listed: list[Any] = core.list_namespace().items
    return {str(namespace.metadata.name) for namespace in listed}


def test_the_second_node_is_a_pool_of_its_own(cluster: Cluster, second_node: Node) -> None:
    node = cluster.node(second_node.spec.name)
    taints = [t for t in node["spec"]["taints"] if not t["key"].startswith("node.kubernetes.io/")]  # the node's own
    assert taints == [{"key": TAINT[0], "value": TAINT[1], "effect": TAINT[2]}]
    allocatable_mib = int(node["status"]["allocatable"]["memory"].removesuffix("Ki")) // 1024
    assert 128 < allocatable_mib < 512


def test_tolerated_both_nodes_are_killed_as_predicted(fleet: dict[str, Judged]) -> None:
    judged = fleet["fleet-tolerated"]
    assert judged.code == verify.EXIT_AS_PREDICTED, judged.err[-3000:]
    assert set(judged.nodes) == {"oom-killer-e2e", SECOND}
    for node in judged.nodes.values():
        assert node["verdict"] == "as-predicted"
        assert node["happened"].startswith("OOM-killed")
        assert node["cgroup"] == "v1"
        assert node["driver"] == "cgroupfs"
        assert node["kubelet"].startswith("v1.37")
    assert judged.verdict["fleet_nodes"] == "2"


def test_a_node_that_cannot_hold_the_request_says_so_and_the_fleet_differs(fleet: dict[str, Judged]) -> None:
    judged = fleet["fleet-too-big"]
    assert judged.code == verify.EXIT_NOT_AS_PREDICTED
    second = judged.nodes[SECOND]
    assert second["verdict"] == "not-scheduled"
    assert "Insufficient memory" in second["happened"]
    assert judged.nodes["oom-killer-e2e"]["verdict"] == "as-predicted"
    assert f"node {SECOND}" in judged.verdict["failed"]


def test_a_tainted_node_without_the_toleration_is_not_selected_not_passed(fleet: dict[str, Judged]) -> None:
    judged = fleet["fleet-untolerated"]
    assert judged.code == verify.EXIT_AS_PREDICTED, judged.err[-3000:]
    second = judged.nodes[SECOND]
    assert second["verdict"] == "not-selected"
    assert f"taint {TAINT[0]}={TAINT[1]}:{TAINT[2]}" in second["happened"]
    assert judged.nodes["oom-killer-e2e"]["verdict"] == "as-predicted"
