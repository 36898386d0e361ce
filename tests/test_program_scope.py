"""scope, nodeSelector and tolerations (issue 18) under Pulumi's mocks: scope=node declares a DaemonSet running the
Deployment's very pod, one node at a time; both scopes aim the pod at a node pool as Kubernetes wants it; replicas=0
stops a DaemonSet by a nodeSelector no node carries; bad values are refused in one line with nothing declared; the
exports follow the kind. Strict schemas and checkov for a DaemonSet stack: tests/test_manifests.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from infra.names import STOPPED_NODE_SELECTOR
from infra.settings import ConfigError
from oomtools import demo
from oomtools.rehearsal import declared_pod
from oomtools.render import Rendered, render, stack_config
from tests.test_program import DEPLOYMENT, assert_refused_and_nothing_declared
from tests.test_readme import page, section

DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
AIMED = {
    "nodeSelector": "pool=oom-lab, kubernetes.io/os=linux",
    "tolerations": "dedicated=oom-lab:NoSchedule,oom-lab.example.com/hog:NoExecute,spot=true,maintenance",
}
# Configs whose pod templates must come out the same in both scopes: the dev stack, one aimed at a node pool with an
# emptyDir, and a pushed image with registry credentials (an imagePullSecrets, and the Secret waited for).
CONFIGS: dict[str, tuple[dict[str, str], frozenset[str]]] = {
    "dev": (stack_config("dev"), frozenset()),
    "aimed-tmpfs": ({**stack_config("dev"), **AIMED, "memoryKind": "tmpfs"}, frozenset()),
    "pushed": (
        {
            "imageRepository": "ghcr.io/acme/oom-killer",
            "platform": "linux/amd64",
            "registryUsername": "robot",
            "registryPassword": "s3cret",
            "processModel": "supervised",
        },
        frozenset({"registryPassword"}),
    ),
}


def scoped(name: str, scope: str) -> Rendered:
    config, secrets = CONFIGS[name]
    return render({**config, "scope": scope}, secrets=secrets)


def workload(rendered: Rendered) -> dict[str, Any]:
    """The one workload object, of either kind."""
    (found,) = rendered.of_type(DEPLOYMENT) + rendered.of_type(DAEMON_SET)
    return found.inputs


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    return dict(workload(rendered)["spec"]["template"]["spec"])


def test_scope_node_declares_a_daemon_set_and_no_deployment_and_deployment_stays_the_default() -> None:
    node = scoped("dev", "node")
    assert node.of_type(DEPLOYMENT) == []
    daemon_set = node.one(DAEMON_SET).inputs
    assert (daemon_set["apiVersion"], daemon_set["kind"]) == ("apps/v1", "DaemonSet")
    assert daemon_set["metadata"]["name"] == "oom-killer"
    assert daemon_set["metadata"]["namespace"] == "oom-killer"
    default = render(stack_config("dev"))
    assert default.of_type(DAEMON_SET) == []
    assert default.one(DEPLOYMENT).inputs["metadata"]["name"] == "oom-killer"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_daemon_set_runs_exactly_the_deployments_pod_template(name: str) -> None:
    deployment, daemon_set = scoped(name, "deployment"), scoped(name, "node")
    assert (
        daemon_set.one(DAEMON_SET).inputs["spec"]["template"] == deployment.one(DEPLOYMENT).inputs["spec"]["template"]
    )
    # And the same selector, labels and annotation: only the kind and how it rolls out differ.
    for field in ("labels", "annotations", "name", "namespace"):
        assert workload(daemon_set)["metadata"][field] == workload(deployment)["metadata"][field], field
    assert workload(daemon_set)["spec"]["selector"] == workload(deployment)["spec"]["selector"]


def test_the_daemon_set_rolls_out_one_node_at_a_time_and_is_not_awaited() -> None:
    daemon_set = scoped("dev", "node").one(DAEMON_SET).inputs
    assert daemon_set["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert daemon_set["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert "replicas" not in daemon_set["spec"]


@pytest.mark.parametrize("name", ["dev", "pushed"])
def test_the_daemon_set_waits_for_what_the_deployment_waits_for(name: str) -> None:
    deployment, daemon_set = scoped(name, "deployment"), scoped(name, "node")
    waits = set(daemon_set.dependencies["daemon-set"])
    assert waits == set(deployment.dependencies["deployment"])
    assert {"limit-range", "deny-all", "namespace"} <= waits
    assert ("registry-credentials" in waits) == (name == "pushed")


@pytest.mark.parametrize("scope", ["deployment", "node"])
def test_node_selector_and_tolerations_land_in_the_pod_as_kubernetes_wants_them(scope: str) -> None:
    pod = pod_spec(scoped("aimed-tmpfs", scope))
    assert pod["nodeSelector"] == {"pool": "oom-lab", "kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "oom-lab", "effect": "NoSchedule"},
        {"key": "oom-lab.example.com/hog", "operator": "Exists", "effect": "NoExecute"},
        {"key": "spot", "operator": "Equal", "value": "true"},  # no effect given: every effect
        {"key": "maintenance", "operator": "Exists"},
    ]


@pytest.mark.parametrize("scope", ["deployment", "node"])
def test_without_them_the_pod_has_no_node_selector_and_no_tolerations(scope: str) -> None:
    pod = pod_spec(scoped("dev", scope))
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


def test_replicas_zero_stops_a_daemon_set_by_a_node_selector_no_node_carries() -> None:
    stopped = render({**AIMED, "scope": "node", "replicas": "0"})
    assert STOPPED_NODE_SELECTOR == {"oom-killer.io/stopped": "true"}
    assert pod_spec(stopped)["nodeSelector"] == {
        "pool": "oom-lab",
        "kubernetes.io/os": "linux",
        **STOPPED_NODE_SELECTOR,
    }
    # The objects stay: the DaemonSet and what it needs.
    assert stopped.one(DAEMON_SET)
    assert len(stopped.kubernetes_objects()) == 4
    # A Deployment stops by its replicas instead, and its pod asks for no such label.
    scaled = render({"replicas": "0", "nodeSelector": "pool=oom-lab"})
    assert scaled.one(DEPLOYMENT).inputs["spec"]["replicas"] == 0
    assert pod_spec(scaled)["nodeSelector"] == {"pool": "oom-lab"}


def test_make_demo_runs_the_daemon_sets_one_pod_as_the_deployments() -> None:
    for name in CONFIGS:
        daemon_set, deployment = declared_pod(scoped(name, "node")), declared_pod(scoped(name, "deployment"))
        assert (daemon_set.kind, deployment.kind) == ("DaemonSet", "Deployment"), name
        assert dataclasses.replace(daemon_set, kind="Deployment") == deployment, name  # the same pod otherwise
    assert declared_pod(scoped("dev", "node")).replicas == 1
    assert declared_pod(render({"scope": "node", "replicas": "0"})).replicas == 0
    with pytest.raises(demo.DemoError) as caught:
        demo.declared("dev", {"scope": "node", "replicas": "0"})
    assert caught.value.code == demo.EXIT_NOTHING_TO_RUN


@pytest.mark.parametrize(
    ("config", "key", "shown"),
    [
        ({"scope": "daemonset"}, "scope", "'daemonset'"),
        ({"scope": "Node"}, "scope", "'Node'"),
        ({"scope": "node", "replicas": "3"}, "replicas", "3"),
        ({"scope": "node", "replicas": "2"}, "replicas", "2"),
        ({"scope": "node", "replicas": "1000"}, "replicas", "1000"),
        ({"tolerations": "dedicated=hogs:NoScheduled"}, "tolerations", "'dedicated=hogs:NoScheduled'"),
        ({"tolerations": "dedicated:noschedule"}, "tolerations", "'dedicated:noschedule'"),
        ({"tolerations": "dedicated=hogs:"}, "tolerations", "'dedicated=hogs:'"),
        ({"tolerations": ":NoSchedule"}, "tolerations", "':NoSchedule'"),
        ({"tolerations": "a b=c"}, "tolerations", "'a b=c'"),
        ({"tolerations": "pool=a b:NoExecute"}, "tolerations", "'pool=a b:NoExecute'"),
        ({"nodeSelector": "a b=c"}, "nodeSelector", "'a b=c'"),
        ({"nodeSelector": "pool"}, "nodeSelector", "'pool'"),
        ({"nodeSelector": "pool=a,pool=b"}, "nodeSelector", "'pool=a,pool=b'"),
        ({"nodeSelector": "pool=-x"}, "nodeSelector", "'pool=-x'"),
    ],
)
def test_a_bad_scope_node_selector_or_toleration_is_refused_in_one_line_and_declares_nothing(
    config: dict[str, str], key: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_refused_and_nothing_declared(config, key, shown, monkeypatch)


def test_replicas_beyond_one_with_scope_node_says_why() -> None:
    with pytest.raises(ConfigError) as caught:
        render({"scope": "node", "replicas": "3"})
    assert str(caught.value).startswith("invalid config oom-killer:replicas=3: ")
    assert "scope=node runs one pod per selected node" in str(caught.value)


def test_the_exports_follow_the_kind_and_the_rest_holds_for_both_scopes() -> None:
    deployment, node = scoped("dev", "deployment"), scoped("dev", "node")
    assert deployment.exports["workloadKind"] == "Deployment"
    assert node.exports["workloadKind"] == "DaemonSet"
    assert deployment.exports["workloadName"] == node.exports["workloadName"] == "oom-killer"
    assert deployment.exports["deploymentName"] == "oom-killer"
    assert "deploymentName" not in node.exports  # a DaemonSet is no Deployment: verify must not look for one
    shared = set(deployment.exports) - {"workloadKind", "deploymentName"}
    assert set(node.exports) == shared | {"workloadKind"}
    for name in shared - {"workloadKind"}:
        assert node.exports[name] == deployment.exports[name], name
    assert not any("deploy/" in command for command in node.exports["kubectl"].values())
    documented = section("## What a stack exports", page("configuration.md"))
    for name in node.exports:
        assert f"`{name}`" in documented, name
