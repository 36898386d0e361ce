"""A memory limit changed in place on the real kubelet (issue 31, part 3): `oom-killer resize`, as VPA's updater
patches a pod, against a hog that grows (killed) or holds at 75% of its limit (refused, held). Each of the three
outcomes:

- killed: the limit lowered while the hog grows, above what it is charged: the kubelet applies it, and the hog's
  steps reach it (OOMKilled, 137), in the steps predicted; its restart keeps the new limit;
- refused: once it holds, lowered below its charge: the kubelet's check refuses it (PodResizeInProgress, reason
  Error, `cannot decrease memory limits`), and it is withdrawn;
- held: then lowered, but above that charge: applied, and the hog runs on under it.

And the pod's own limit (limitScope=pod, `spec.resources`, resized in place under the gate
InPlacePodLevelResourcesVerticalScaling, beta and on from 1.36): lowered while the hog grows, and its kill.

The resizes run in threads beside the first modules (tests/e2e/resizing.py); these tests judge what they collected.
Proven on the e2e node: the kubelet v1.37 on cgroup v1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oomtools import resize
from tests.e2e.resizing import HELD_TO_MIB, KILL_TO_MIB, REFUSED_TO_MIB, Collected, Resizes, Result
from tests.e2e.support import line

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True, scope="module")
def _gone_after(resizes: Resizes) -> Iterator[None]:
    """The resizes' namespaces go with the module, long before the cluster stops (a pod torn down while the stop
    walks the node's cgroups made it race once)."""
    yield
    resizes.close()


def said(lines: list[dict[str, str]], event: str) -> dict[str, str]:
    found = [fields for fields in lines if fields.get("event") == event]
    assert found, (event, lines)
    return found[-1]


def judged(result: Result) -> list[dict[str, str]]:
    """The resize's lines, its verdict line in make e2e's report, and its exit code as predicted."""
    code, lines, err = result
    assert lines, err
    line(" ".join(f"{key}={value}" for key, value in lines[-1].items() if key != "failed" or value != "none"))
    assert code == resize.EXIT_AS_PREDICTED, (lines, err)
    return lines


def raised(*scenarios: Collected) -> None:
    """What a scenario's thread raised, raised here."""
    for one in scenarios:
        if one.error is not None:
            raise one.error


@pytest.mark.timeout(660)
def test_a_limit_changed_in_place_is_killed_refused_or_held_as_predicted(resizes: Resizes) -> None:
    container, holding, _ = resizes.wait()
    raised(container, holding)

    lines = judged(container.results["killed"])
    verdict = lines[-1]
    assert (verdict["resize"], verdict["predicted"], verdict["verdict"]) == ("killed", "killed", "as-predicted")
    assert (verdict["reason"], verdict["exit_code"]) == ("OOMKilled", "137")
    assert said(lines, "applied")["limit_mib"] == str(KILL_TO_MIB)
    assert container.pods["restarted_start"]["limit_mib"] == str(KILL_TO_MIB)  # its restart keeps the new limit

    # Refused: the kubelet's own words, and the resize withdrawn.
    lines = judged(holding.results["refused"])
    assert (lines[-1]["resize"], lines[-1]["predicted"]) == ("refused", "refused")
    message = said(lines, "refused")["message"]
    assert message.startswith("cannot decrease memory limits:"), message
    assert f"memory limit ({REFUSED_TO_MIB * 1024 * 1024})" in message
    assert said(lines, "withdrawn")["cleared"] == "true"
    assert holding.pods["refused"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "128Mi"

    # Held: applied, and no kill while it holds.
    lines = judged(holding.results["held"])
    assert (lines[-1]["resize"], lines[-1]["predicted"]) == ("held", "held")
    status = holding.pods["held"]["status"]["containerStatuses"][0]
    assert status["resources"]["limits"]["memory"] in (f"{HELD_TO_MIB}Mi", str(HELD_TO_MIB * 1024 * 1024))
    assert status["restartCount"] == 0
    assert "running" in status["state"]


@pytest.mark.timeout(660)
def test_a_pod_level_limit_lowered_in_place_kills_the_growing_hog_as_predicted(resizes: Resizes) -> None:
    *_, pod_scope = resizes.wait()
    raised(pod_scope)
    verdict = judged(pod_scope.results["killed"])[-1]
    assert (verdict["resize"], verdict["scope"], verdict["verdict"]) == ("killed", "pod", "as-predicted")
    assert (verdict["reason"], verdict["exit_code"]) == ("OOMKilled", "137")
    pod = pod_scope.pods["killed"]
    assert pod["status"]["resources"]["limits"]["memory"] == f"{KILL_TO_MIB}Mi"  # the pod's, as its status shows it
    assert "limits" not in pod["spec"]["containers"][0]["resources"]
