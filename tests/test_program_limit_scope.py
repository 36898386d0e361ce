"""limitScope=pod under Pulumi's mocks: the limits on the pod (spec.resources), none on the container, a LimitRange
that caps the pod without giving the container a limit of its own, the pod's limit handed to the hog through the
Downward API, and a prediction that counts the pod's sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.kube import POD_LIMIT_VARIABLE, predicted_oom_kill_step
from infra.table import MIN_LIMIT_MIB, step_room_mib
from oomtools.rehearsal import pod_level, run_options, stack_pod
from oomtools.render import Rendered, render, stack_config
from tests.test_program import DEPLOYMENT, LIMIT_RANGE, load_settings_for
from workload.kinds import BASELINE_MAX_MIB, BASELINE_MIN_MIB
from workload.memory import MIB
from workload.predict import (
    GROWTH_BASE_BYTES,
    GROWTH_DIVISOR,
    POD_SANDBOX_MAX_BYTES,
    binding_limit,
    first_step_past,
    predict_kill,
)


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    return dict(rendered.one(DEPLOYMENT).inputs["spec"]["template"]["spec"])


def test_the_limits_are_the_pods_and_the_container_has_none_of_its_own() -> None:
    rendered = render({**stack_config("dev"), "limitScope": "pod", "memoryLimitMb": "192", "cpuMillicores": "250"})
    spec = pod_spec(rendered)
    # Requests equal to limits on the pod: Guaranteed QoS, from the pod's own resources.
    assert spec["resources"] == {
        "requests": {"memory": "192Mi", "cpu": "250m"},
        "limits": {"memory": "192Mi", "cpu": "250m"},
    }
    (container,) = spec["containers"]
    assert "resources" not in container
    # The hog is told the pod's limit in MiB: the Downward API gives a container without a limit the pod's.
    (from_pod,) = [item for item in container["env"] if "valueFrom" in item]
    assert from_pod == {
        "name": POD_LIMIT_VARIABLE,
        "valueFrom": {
            "resourceFieldRef": {"containerName": container["name"], "resource": "limits.memory", "divisor": "1Mi"}
        },
    }
    # A Container item would give the container a default limit of its own: only the pod is capped.
    assert rendered.one(LIMIT_RANGE).inputs["spec"]["limits"] == [{"type": "Pod", "max": {"memory": "192Mi"}}]


def test_a_pagecache_hog_keeps_its_disk_on_the_container_which_has_no_pod_level_field() -> None:
    rendered = render({**stack_config("dev"), "limitScope": "pod", "memoryKind": "pagecache"})
    spec = pod_spec(rendered)
    (container,) = spec["containers"]
    storage = container["resources"]["limits"]["ephemeral-storage"]
    assert container["resources"] == {
        "requests": {"ephemeral-storage": storage},
        "limits": {"ephemeral-storage": storage},
    }
    assert set(spec["resources"]["limits"]) == {"memory", "cpu"}
    assert rendered.one(LIMIT_RANGE).inputs["spec"]["limits"] == [
        {
            "type": "Container",
            "default": {"ephemeral-storage": storage},
            "defaultRequest": {"ephemeral-storage": storage},
            "max": {"ephemeral-storage": storage},
        },
        {"type": "Pod", "max": {"memory": spec["resources"]["limits"]["memory"]}},
    ]


def test_the_default_scope_is_the_containers_and_says_nothing_of_a_pod() -> None:
    spec = pod_spec(render(stack_config("dev")))
    assert "resources" not in spec
    (container,) = spec["containers"]
    assert set(container["resources"]["limits"]) == {"memory", "cpu"}
    assert all("valueFrom" not in item for item in container["env"])


def test_a_scope_that_is_neither_is_refused_by_name() -> None:
    with pytest.raises(
        Exception, match=r"^invalid config oom-killer:limitScope='namespace': must be one of container, pod"
    ):
        render({**stack_config("dev"), "limitScope": "namespace"})


def test_the_tighter_of_the_cgroups_and_the_pods_limit_binds_and_says_where_it_was_seen() -> None:
    # v1: the hierarchical limit shows the pod's (equal), or a container's own tighter one; v2 in a namespace: none.
    assert binding_limit(128 * MIB, 128 * MIB) == (128 * MIB, "cgroup")
    assert binding_limit(100 * MIB, 128 * MIB) == (100 * MIB, "cgroup")
    assert binding_limit(None, 128 * MIB) == (128 * MIB, "downward_api")
    # A looser limit in sight (a node's, say) is not the one that binds: the pod's is.
    assert binding_limit(129 * MIB, 128 * MIB) == (128 * MIB, "downward_api")


def test_the_demo_runs_the_pods_limit_and_hands_the_hog_what_the_kubelet_would(tmp_path: Path) -> None:
    pod = stack_pod("dev", {"limitScope": "pod", "memoryLimitMb": "100", "cpuMillicores": "250", "baseImage": ""})
    options = run_options(pod, tmp_path / "termination-log")
    assert options["mem_limit"] == options["memswap_limit"] == 100 * MIB
    assert options["nano_cpus"] == 250_000_000
    assert options["environment"][POD_LIMIT_VARIABLE] == "100"
    assert pod_level(pod) == " (the pod's)"
    assert pod_level(stack_pod("dev", {"baseImage": ""})) == ""


@given(
    limit=st.integers(min_value=MIN_LIMIT_MIB, max_value=2048),
    increment=st.integers(min_value=1, max_value=2048),
    baseline_kib=st.integers(min_value=BASELINE_MIN_MIB * 1024, max_value=BASELINE_MAX_MIB * 1024),
    sandbox_kib=st.integers(min_value=0, max_value=POD_SANDBOX_MAX_BYTES // 1024),
)
def test_the_pods_range_holds_a_kill_whatever_its_sandbox_takes_up_to_the_allowance(
    limit: int, increment: int, baseline_kib: int, sandbox_kib: int
) -> None:
    config = {"memoryLimitMb": str(limit), "memoryIncrementMb": str(increment)}
    if increment > step_room_mib(limit, "single"):
        return  # refused (tests/test_program.py holds the rule)
    pod_steps = predicted_oom_kill_step(load_settings_for({**config, "limitScope": "pod"}))
    container_steps = predicted_oom_kill_step(load_settings_for(config))
    assert pod_steps is not None
    assert container_steps is not None
    # The sandbox only moves the earliest step: the latest is the container's.
    assert pod_steps["latest"] == container_steps["latest"]
    assert pod_steps["earliest"] <= container_steps["earliest"]
    # The kill when the whole baseline and the sandbox's charge stay, with the kernel's growth: inside the range.
    room = limit * MIB - baseline_kib * 1024 - sandbox_kib * 1024
    earliest_kill = first_step_past(room - GROWTH_BASE_BYTES, increment * MIB, GROWTH_DIVISOR)
    assert pod_steps["earliest"] <= earliest_kill
    # What the hog announces from its own charge, blind to the sandbox, lies inside the stack's range too.
    announced = predict_kill(limit * MIB, baseline_kib * 1024, increment, 0, None, unseen_bytes=POD_SANDBOX_MAX_BYTES)
    assert announced is not None
    assert pod_steps["earliest"] <= announced.earliest <= announced.latest <= pod_steps["latest"]


def test_nothing_unseen_is_counted_unless_the_limit_is_a_pods() -> None:
    # A room of the kernel's growth allowance and exactly one 1 MiB step with its growth: the earliest kill is step 2;
    # one byte of unseen charge (a pod's sandbox) takes it to step 1, and none is counted unless asked.
    room = GROWTH_BASE_BYTES + (GROWTH_DIVISOR + 1) * MIB // GROWTH_DIVISOR
    limit = 64 * MIB
    plain = predict_kill(limit, limit - room, 1, 0, None)
    with_sandbox = predict_kill(limit, limit - room, 1, 0, None, unseen_bytes=1)
    assert plain is not None
    assert with_sandbox is not None
    assert (plain.earliest, with_sandbox.earliest) == (2, 1)
