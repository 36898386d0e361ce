"""vpa under Pulumi's mocks: a VerticalPodAutoscaler over the workload in the mode asked for, sizing memory alone up to
vpaMaxMb, the LimitRange's max raised to the same, and the settings a VPA needs refused one line each."""

from __future__ import annotations

from typing import Any

import pytest

from infra.kube import predicted_oom_kill_step
from oomtools.render import Rendered, render, stack_config
from tests.test_program import DEPLOYMENT, LIMIT_RANGE, load_settings_for

VPA_TYPE = "kubernetes:autoscaling.k8s.io/v1:VerticalPodAutoscaler"
SAVED = {"memoryLimitMb": "128", "memoryCeilingMb": "160"}  # killed at 128, holds at 160 once VPA gives it room


def vpas(rendered: Rendered) -> list[dict[str, Any]]:
    return [resource.inputs for resource in rendered.resources if resource.type == VPA_TYPE]


@pytest.mark.parametrize("mode", ["Auto", "Recreate", "InPlaceOrRecreate"])
def test_a_vpa_over_the_workload_sizes_its_memory_alone_up_to_its_maximum(mode: str) -> None:
    rendered = render({**stack_config("dev"), **SAVED, "vpa": mode})
    (vpa,) = vpas(rendered)
    assert (vpa["apiVersion"], vpa["kind"], vpa["metadata"]["name"]) == (
        "autoscaling.k8s.io/v1",
        "VerticalPodAutoscaler",
        "oom-killer",
    )
    assert vpa["metadata"]["namespace"] == "oom-killer"
    deployment = rendered.one(DEPLOYMENT).inputs
    assert vpa["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "oom-killer"}
    assert deployment["metadata"]["name"] == "oom-killer"
    # One replica is enough for the updater to act on (its default minimum is two).
    assert vpa["spec"]["updatePolicy"] == {"updateMode": mode, "minReplicas": 1}
    (policy,) = vpa["spec"]["resourcePolicy"]["containerPolicies"]
    assert policy == {
        "containerName": deployment["spec"]["template"]["spec"]["containers"][0]["name"],
        "controlledResources": ["memory"],
        "controlledValues": "RequestsAndLimits",
        "maxAllowed": {"memory": "512Mi"},  # four times the limit by default
    }
    # The LimitRange lets VPA go that far, and still gives a container the stack's limit by default.
    (item,) = rendered.one(LIMIT_RANGE).inputs["spec"]["limits"]
    assert item == {
        "type": "Container",
        "default": {"memory": "128Mi"},
        "defaultRequest": {"memory": "128Mi"},
        "max": {"memory": "512Mi"},
    }
    # The hog is still killed at its own limit first: its ceiling is above it.
    assert predicted_oom_kill_step(load_settings_for({**stack_config("dev"), **SAVED, "vpa": mode})) is not None


def test_vpas_maximum_is_its_own_setting_and_a_daemon_set_is_targeted_as_one() -> None:
    rendered = render({**stack_config("dev"), **SAVED, "vpa": "Recreate", "vpaMaxMb": "300", "scope": "node"})
    (vpa,) = vpas(rendered)
    assert vpa["spec"]["targetRef"]["kind"] == "DaemonSet"
    assert vpa["spec"]["resourcePolicy"]["containerPolicies"][0]["maxAllowed"] == {"memory": "300Mi"}
    assert rendered.one(LIMIT_RANGE).inputs["spec"]["limits"][0]["max"] == {"memory": "300Mi"}


def test_without_vpa_nothing_changes() -> None:
    rendered = render(stack_config("dev"))
    assert vpas(rendered) == []
    assert rendered.one(LIMIT_RANGE).inputs["spec"]["limits"][0]["max"] == {"memory": "128Mi"}


@pytest.mark.parametrize(
    ("config", "refusal"),
    [
        (
            {"vpaMaxMb": "512"},
            r"oom-killer:vpaMaxMb=512: is VPA's maximum, and no VPA is declared: `pulumi config set vpa",
        ),
        (
            {"vpa": "Auto", "vpaMaxMb": "100"},
            r"oom-killer:vpaMaxMb=100: must be 0 \(4 times the limit\) or at least memoryLimitMb \(128\)",
        ),
        ({"vpa": "Auto", "limitScope": "pod"}, r"oom-killer:vpa='Auto': needs limitScope=container"),
        ({"vpa": "Initial"}, r"oom-killer:vpa='Initial': must be one of none, Auto, Recreate, InPlaceOrRecreate"),
        # A ceiling above the limit is for a VPA to save, and only as far as VPA may go.
        ({"memoryCeilingMb": "160"}, r"oom-killer:memoryCeilingMb=160: must be 0 \(no ceiling\) or at most"),
        (
            {"vpa": "Auto", "vpaMaxMb": "200", "memoryCeilingMb": "190"},
            r"oom-killer:memoryCeilingMb=190: must be 0 \(no ceiling\) or at most \d+ with vpa: VPA's most "
            r"\(vpaMaxMb, 200\)",
        ),
    ],
)
def test_a_setting_a_vpa_cannot_work_with_is_refused_in_one_line(config: dict[str, str], refusal: str) -> None:
    with pytest.raises(Exception, match=rf"^invalid config {refusal}"):
        render({**stack_config("dev"), "memoryLimitMb": "128", **config})


@pytest.mark.parametrize(
    ("model", "room"),
    [("single", 184), ("supervised", 168)],  # VPA's most, 200, less one interpreter's 16 MiB, or two's 32
)
def test_with_a_vpa_a_ceiling_may_reach_vpas_most_less_the_interpreters_and_no_further(model: str, room: int) -> None:
    config = {**stack_config("dev"), "memoryLimitMb": "128", "vpa": "Auto", "vpaMaxMb": "200", "processModel": model}
    render({**config, "memoryCeilingMb": str(room)})  # exactly the room: taken
    who = "the interpreter takes" if model == "single" else "for each of two interpreters"
    refusal = (
        rf"^invalid config oom-killer:memoryCeilingMb={room + 1}: must be 0 \(no ceiling\) or at most {room} with vpa: "
        rf"VPA's most \(vpaMaxMb, 200\) less up to {200 - room} MiB {who}, so that it can hold once VPA gives it the "
        r"room$"
    )
    with pytest.raises(Exception, match=refusal):
        render({**config, "memoryCeilingMb": str(room + 1)})


def test_vpas_most_may_be_the_limit_itself() -> None:
    rendered = render({**stack_config("dev"), "memoryLimitMb": "128", "vpa": "Auto", "vpaMaxMb": "128"})
    assert vpas(rendered)[0]["spec"]["resourcePolicy"]["containerPolicies"][0]["maxAllowed"] == {"memory": "128Mi"}
