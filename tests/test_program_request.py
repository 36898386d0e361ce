"""memoryRequestMb under Pulumi's mocks: a memory request below the limit makes the hog's pod Burstable (for
Kubernetes' LimitedSwap, which gives swap to Burstable containers only), on the container, on the DaemonSet's pod and
on the pod itself (limitScope=pod), with a LimitRange that still admits it; 0, the default, leaves every object as a
Guaranteed pod's."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import ConfigError
from oomtools import demo
from oomtools.render import Rendered, render, stack_config
from tests.test_cli import one_line, oom_killer
from tests.test_program import DEPLOYMENT, LIMIT_RANGE, assert_refused_and_nothing_declared

DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
BURSTABLE = {**stack_config("dev"), "memoryRequestMb": "48"}  # the dev stack's 128 MiB limit, 48 of it requested


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    (workload,) = rendered.of_type(DEPLOYMENT) + rendered.of_type(DAEMON_SET)
    return dict(workload.inputs["spec"]["template"]["spec"])


def qos_class(spec: dict[str, Any]) -> str:
    """The pod's QoS class as Kubernetes gives it (pkg/apis/core/helper/qos, with pod-level resources): from the
    pod's own requests and limits where it declares them, else its containers'. Guaranteed where CPU and memory are
    both limited and every request equals its limit; BestEffort where nothing is requested or limited."""
    declared = [spec["resources"]] if spec.get("resources") else [c.get("resources") or {} for c in spec["containers"]]
    requests = [{k: v for k, v in (r.get("requests") or {}).items() if k in ("cpu", "memory")} for r in declared]
    limits = [{k: v for k, v in (r.get("limits") or {}).items() if k in ("cpu", "memory")} for r in declared]
    if not any(requests) and not any(limits):
        return "BestEffort"
    # A request left out is the limit (the API's defaulting), as a Guaranteed pod may be written.
    whole = all(set(limit) == {"cpu", "memory"} for limit in limits)
    equal = all({**limit, **request} == limit for request, limit in zip(requests, limits, strict=True))
    return "Guaranteed" if whole and equal else "Burstable"


def test_the_qos_class_is_read_as_kubernetes_reads_it() -> None:
    both = {"cpu": "100m", "memory": "128Mi"}
    assert qos_class({"containers": [{"resources": {"requests": both, "limits": both}}]}) == "Guaranteed"
    assert qos_class({"containers": [{"resources": {"limits": both}}]}) == "Guaranteed"
    lower = {"cpu": "100m", "memory": "48Mi"}
    assert qos_class({"containers": [{"resources": {"requests": lower, "limits": both}}]}) == "Burstable"
    assert qos_class({"containers": [{"resources": {"limits": {"memory": "128Mi"}}}]}) == "Burstable"
    assert qos_class({"containers": [{}]}) == "BestEffort"
    pod_level = {"resources": {"requests": lower, "limits": both}, "containers": [{}]}
    assert qos_class(pod_level) == "Burstable"


def test_a_request_below_the_limit_is_the_containers_and_makes_the_pod_burstable() -> None:
    rendered = render(BURSTABLE)
    spec = pod_spec(rendered)
    (container,) = spec["containers"]
    assert container["resources"] == {
        "requests": {"memory": "48Mi", "cpu": "100m"},  # the CPU request stays its limit: only memory bursts
        "limits": {"memory": "128Mi", "cpu": "100m"},
    }
    assert "resources" not in spec
    assert qos_class(spec) == "Burstable"
    assert rendered.exports["memoryLimit"] == "128Mi"


def test_the_limit_range_admits_the_burstable_hog_and_gives_a_bare_container_its_request() -> None:
    (item,) = render(BURSTABLE).one(LIMIT_RANGE).inputs["spec"]["limits"]
    assert item == {
        "type": "Container",
        "default": {"memory": "128Mi"},
        "defaultRequest": {"memory": "48Mi"},
        "max": {"memory": "128Mi"},
    }
    # What the LimitRanger checks at admission: the hog's own request and limit within the max, and a container
    # defaulted by the item no bigger than the hog, with a request at or below its default limit.
    limits = pod_spec(render(BURSTABLE))["containers"][0]["resources"]
    assert limits["limits"]["memory"] == item["max"]["memory"]
    assert int(item["defaultRequest"]["memory"][:-2]) <= int(item["default"]["memory"][:-2])


def test_a_daemon_set_runs_the_same_burstable_pod() -> None:
    node = pod_spec(render({**BURSTABLE, "scope": "node"}))
    deployment = pod_spec(render(BURSTABLE))
    assert node["containers"][0]["resources"] == deployment["containers"][0]["resources"]
    assert node["containers"][0]["resources"]["requests"]["memory"] == "48Mi"
    assert qos_class(node) == "Burstable"


def test_with_limit_scope_pod_the_pods_request_is_below_its_limit_and_the_container_has_none() -> None:
    rendered = render({**BURSTABLE, "limitScope": "pod", "cpuMillicores": "250"})
    spec = pod_spec(rendered)
    assert spec["resources"] == {
        "requests": {"memory": "48Mi", "cpu": "250m"},
        "limits": {"memory": "128Mi", "cpu": "250m"},
    }
    assert "resources" not in spec["containers"][0]
    assert qos_class(spec) == "Burstable"
    # The Pod item caps the limit alone: a Container item would give the container memory of its own.
    assert rendered.one(LIMIT_RANGE).inputs["spec"]["limits"] == [{"type": "Pod", "max": {"memory": "128Mi"}}]


def test_a_pagecache_hogs_disk_stays_requested_at_its_limit() -> None:
    spec = pod_spec(render({**BURSTABLE, "memoryKind": "pagecache"}))
    resources = spec["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"]
    assert (resources["requests"]["memory"], resources["limits"]["memory"]) == ("48Mi", "128Mi")
    (item,) = render({**BURSTABLE, "memoryKind": "pagecache"}).one(LIMIT_RANGE).inputs["spec"]["limits"]
    assert item["defaultRequest"] == {"memory": "48Mi", "ephemeral-storage": resources["limits"]["ephemeral-storage"]}


@pytest.mark.parametrize(
    "config",
    [
        stack_config("dev"),
        {**stack_config("dev"), "scope": "node"},
        {**stack_config("dev"), "limitScope": "pod"},
        {**stack_config("dev"), "memoryKind": "pagecache"},
        {"vpa": "Auto", "memoryCeilingMb": "400"},
    ],
    ids=["dev", "node", "pod", "pagecache", "vpa"],
)
def test_a_request_of_0_or_of_the_limit_leaves_every_object_a_guaranteed_pods(config: dict[str, str]) -> None:
    unset = render(config)
    limit = config.get("memoryLimitMb", "256")
    for value in ("0", limit):
        rendered = render({**config, "memoryRequestMb": value})
        assert rendered.kubernetes_objects() == unset.kubernetes_objects(), value
        assert rendered.exports == unset.exports, value
    spec = pod_spec(unset)
    assert qos_class(spec) == "Guaranteed"
    resources = spec.get("resources") or spec["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]


# The dev stack's 128 MiB limit: each refusal's one line, after `invalid config oom-killer:`.
REFUSED = {
    "above the limit": (
        {"memoryRequestMb": "129"},
        "memoryRequestMb=129: must be 0 (the limit) or at most memoryLimitMb (128): Kubernetes refuses a request above "
        "the limit",
    ),
    "with a VPA": (
        {"memoryRequestMb": "64", "vpa": "InPlaceOrRecreate", "memoryCeilingMb": "200"},
        "memoryRequestMb=64: must be 0 (the limit) with vpa=InPlaceOrRecreate: VPA scales the limit with the request, "
        "and `make verify ARGS=--vpa` predicts its answer to a kill from a request equal to the limit (`pulumi config "
        "rm memoryRequestMb`, or set vpa none)",
    ),
    "past the row's bound": (
        {"memoryRequestMb": "-1"},
        "memoryRequestMb=-1: must be from 0 to 1048576 (MiB)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_request_the_stack_cannot_declare_is_refused_in_one_line_and_nothing_is_declared(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, line = REFUSED[case]
    key, _, rest = line.partition("=")
    shown = rest.partition(":")[0]
    assert_refused_and_nothing_declared({**stack_config("dev"), **config}, key, shown, monkeypatch)
    with pytest.raises(ConfigError) as caught:
        render({**stack_config("dev"), **config})
    assert str(caught.value) == f"invalid config oom-killer:{line}"


def test_a_request_above_the_limit_is_the_commands_bad_config_exit_in_one_line() -> None:
    rendered = oom_killer("render", "--set", "memoryRequestMb=129")
    assert rendered.returncode == demo.EXIT_BAD_CONFIG == 2
    one_line(rendered, f"render: invalid config oom-killer:{REFUSED['above the limit'][1]}")
    rehearsed = oom_killer("demo", "--set", "memoryRequestMb=64", "--set", "vpa=Auto", "--set", "memoryCeilingMb=200")
    assert rehearsed.returncode == demo.EXIT_BAD_CONFIG
    one_line(rehearsed, "demo: invalid config oom-killer:memoryRequestMb=64: must be 0 (the limit) with vpa=Auto: ")
