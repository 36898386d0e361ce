"""prometheusRule on the real cluster: the Prometheus Operator's CRD installed, the stack's PrometheusRule created
in the stack's namespace and read back as declared; a broken one refused by the API server's own schema check."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from oomtools.render import render, stack_config
from tests.e2e.cluster import Cluster
from tests.e2e.support import Deployed, fact
from tests.support import PROJECT, require

pytestmark = pytest.mark.e2e

CRD = PROJECT.parent / "shared" / "schemas" / "prometheusrule-crd.json"
GROUP, VERSION, PLURAL = "monitoring.coreos.com", "v1", "prometheusrules"


@pytest.fixture(scope="module")
def prometheus_rule_crd(cluster: Cluster) -> Iterator[None]:
    require(CRD.exists(), f"the PrometheusRule CRD is not at {CRD}")
    extensions = client.ApiextensionsV1Api(cluster.api())
    crd = json.loads(CRD.read_text())
    extensions.create_custom_resource_definition(crd)
    name = crd["metadata"]["name"]
    for _ in range(60):
        status = extensions.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            break
        time.sleep(1)
    else:
        pytest.fail(f"the CRD {name} never became established")
    yield
    extensions.delete_custom_resource_definition(name)


def declared_rule() -> dict[str, Any]:
    rendered = render(
        {**stack_config("dev"), "prometheusRule": "true", "prometheusRuleLabels": "release=kube-prometheus-stack"},
        stack_name="dev",
    )
    rule: dict[str, Any] = rendered.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule").inputs
    return rule


@pytest.mark.usefixtures("prometheus_rule_crd")
def test_the_stacks_prometheus_rule_is_created_in_its_namespace(cluster: Cluster, deployed: Deployed) -> None:
    rule = declared_rule()
    assert rule["metadata"]["namespace"] == deployed.namespace
    objects = client.CustomObjectsApi(cluster.api())
    objects.create_namespaced_custom_object(GROUP, VERSION, deployed.namespace, PLURAL, rule)
    stored: Any = objects.get_namespaced_custom_object(
        GROUP, VERSION, deployed.namespace, PLURAL, rule["metadata"]["name"]
    )
    assert stored["spec"] == rule["spec"]
    assert stored["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    fact("prometheusRule", f"{deployed.namespace}/{stored['metadata']['name']} groups={len(stored['spec']['groups'])}")


@pytest.mark.usefixtures("prometheus_rule_crd")
def test_the_api_server_refuses_a_rule_its_crd_does_not_allow(cluster: Cluster, deployed: Deployed) -> None:
    rule = copy.deepcopy(declared_rule())
    rule["metadata"]["name"] = "broken"
    rule["spec"]["groups"][0]["rules"][0]["for"] = "a minute"
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(cluster.api()).create_namespaced_custom_object(
            GROUP, VERSION, deployed.namespace, PLURAL, rule
        )
    assert refused.value.status == 422
