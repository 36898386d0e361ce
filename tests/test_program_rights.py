"""createNamespace (issue 19, least privilege) under Pulumi's mocks: with false the stack declares no Namespace and
deploys into the one a cluster admin made (infra/rights.yaml), with the same objects in it, waiting for the build as
before, and exporting the same; true stays today's stack; a bad value is refused in one line with nothing declared.
The manifest's own checks: tests/test_rights.py."""

from __future__ import annotations

from typing import Any

import pytest

from oomtools.render import Rendered, render, stack_config
from tests.test_program import DEPLOYMENT, NAMESPACE, assert_refused_and_nothing_declared
from tests.test_program_scope import DAEMON_SET

ADMINS = {**stack_config("dev"), "createNamespace": "false"}
PUSHED = {
    "imageRepository": "ghcr.io/acme/oom-killer",
    "platform": "linux/amd64",
    "registryUsername": "robot",
    "registryPassword": "s3cret",
}
# Every kind the program can declare: the dev stack, scope=node, the PrometheusRule, a pushed image and its pull Secret.
CONFIGS: dict[str, tuple[dict[str, str], frozenset[str]]] = {
    "dev": (stack_config("dev"), frozenset()),
    "node": ({**stack_config("dev"), "scope": "node"}, frozenset()),
    "prometheus-rule": ({**stack_config("dev"), "prometheusRule": "true"}, frozenset()),
    "pushed": ({**PUSHED, "namespace": "oom-lab"}, frozenset({"registryPassword"})),
    "vpa": ({**stack_config("dev"), "vpa": "InPlaceOrRecreate", "memoryCeilingMb": "160"}, frozenset()),
}


def rendered(name: str, create_namespace: str) -> Rendered:
    config, secrets = CONFIGS[name]
    return render({**config, "createNamespace": create_namespace}, secrets=secrets)


def kubernetes_names(found: Rendered) -> set[str]:
    return {resource.name for resource in found.kubernetes_resources()}


def without_namespace(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] != "Namespace"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_create_namespace_false_declares_no_namespace_and_the_same_objects_in_the_admins(name: str) -> None:
    own, admins = rendered(name, "true"), rendered(name, "false")
    assert own.of_type(NAMESPACE)
    assert admins.of_type(NAMESPACE) == []
    assert [o["kind"] for o in admins.kubernetes_objects()] == [
        o["kind"] for o in without_namespace(own.kubernetes_objects())
    ]
    # Every other object exactly as before, in the namespace the config names.
    assert admins.kubernetes_objects() == without_namespace(own.kubernetes_objects())
    namespace = own.one(NAMESPACE).inputs["metadata"]["name"]
    assert {o["metadata"]["namespace"] for o in admins.kubernetes_objects()} == {namespace}
    assert admins.exports == own.exports


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_nothing_depends_on_a_namespace_the_stack_does_not_declare(name: str) -> None:
    admins = rendered(name, "false")
    for resource in kubernetes_names(admins):
        assert "namespace" not in admins.dependencies[resource], resource


@pytest.mark.parametrize("name", ["dev", "pushed", "prometheus-rule"])
def test_nothing_reaches_the_admins_namespace_before_the_image_is_built(name: str) -> None:
    """As with its own namespace: a build or push that fails leaves the cluster as it was."""
    admins = rendered(name, "false")
    workload = DAEMON_SET if admins.of_type(DAEMON_SET) else DEPLOYMENT
    first = kubernetes_names(admins) - {admins.one(workload).name}
    assert first
    for resource in first:
        assert "workload-image" in admins.dependencies[resource], resource
    prebuilt = render({"image": "registry.example.com/oom-killer:1.0", "createNamespace": "false"})
    assert all("workload-image" not in deps for deps in prebuilt.dependencies.values())


def test_the_workload_still_waits_for_the_limit_range_the_policy_and_the_secret() -> None:
    admins = rendered("pushed", "false")
    assert {"limit-range", "deny-all", "registry-credentials"} <= set(admins.dependencies["deployment"])


def test_create_namespace_defaults_to_true_todays_stack() -> None:
    default = render(stack_config("dev"))
    assert default.kubernetes_objects() == rendered("dev", "true").kubernetes_objects()
    assert default.one(NAMESPACE).inputs["metadata"]["name"] == "oom-killer"


@pytest.mark.parametrize(
    ("config", "key", "shown"),
    [
        ({"createNamespace": "maybe"}, "createNamespace", "'maybe'"),
        ({"createNamespace": "no"}, "createNamespace", "'no'"),
        # An admin's namespace is still one of its own: the LimitRange and deny-all policy hold every pod in it.
        ({"createNamespace": "false", "namespace": "default"}, "namespace", "'default'"),
        ({"createNamespace": "false", "namespace": "kube-system"}, "namespace", "'kube-system'"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_and_nothing_is_declared(
    config: dict[str, str], key: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_refused_and_nothing_declared(config, key, shown, monkeypatch)


def test_a_shared_namespace_is_refused_for_what_the_stack_would_do_to_it() -> None:
    with pytest.raises(Exception, match="LimitRange and deny-all NetworkPolicy hold every pod in it"):
        render({"createNamespace": "false", "namespace": "default"})
    with pytest.raises(Exception, match="the stack creates it and `pulumi destroy` deletes it"):
        render({"namespace": "default"})


def test_the_dev_stack_with_an_admins_namespace_is_the_dev_stack_less_its_namespace() -> None:
    admins = render(ADMINS)
    assert [o["kind"] for o in admins.kubernetes_objects()] == ["LimitRange", "NetworkPolicy", "Deployment"]
    assert admins.exports["namespace"] == "oom-killer"
    assert admins.exports["kubectl"]["watchPods"].startswith("kubectl get pods --namespace oom-killer ")
