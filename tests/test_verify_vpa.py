"""verify --vpa without a cluster: what VPA's answer to the hog's kill should be (its documented OOM bump, within its
maximum; held where that leaves the hog room, a loop where it cannot), the watch's bookkeeping of kills,
recommendations and the limit applied, and the verdict on each. The real VPA: tests/e2e/test_vpa.py."""

from __future__ import annotations

import io
from typing import Any

import pytest

from oomtools import verify
from oomtools.verdict import FAILED, PASSED
from oomtools.verify.vpa import (
    HELD,
    LOOPING,
    NothingToAnswer,
    VpaSeen,
    judge_vpa,
    oom_bump_mib,
    predict_vpa,
    seconds_between,
)
from oomtools.verify.vpa_watch import Watch, predict_from, seen_outcome
from workload import logfmt
from workload.kinds import SINGLE, SUPERVISED

MIB = 1024 * 1024


def test_vpas_oom_bump_is_the_larger_of_100_mib_and_a_fifth_more() -> None:
    assert oom_bump_mib(128) == 228
    assert oom_bump_mib(500) == 600
    assert oom_bump_mib(1000) == 1200
    assert oom_bump_mib(1001) == 1201


def test_a_hog_with_room_under_vpas_maximum_is_predicted_to_hold() -> None:
    prediction = predict_vpa("InPlaceOrRecreate", 128, 160, 512, SINGLE)
    assert (prediction.outcome, prediction.need_mib) == (HELD, 160 + SINGLE.baseline_max_mib)
    assert (prediction.mode, prediction.limit_mib, prediction.ceiling_mib, prediction.max_mib) == (
        "InPlaceOrRecreate",
        128,
        160,
        512,
    )
    assert prediction.bump_mib == 228
    assert (
        prediction.why
        == f"VPA's bump after a kill (228 MiB, again after each) reaches the {prediction.need_mib} it needs"
    )
    # Two interpreters need more room.
    assert predict_vpa("Auto", 128, 160, None, SUPERVISED).need_mib == 160 + SUPERVISED.baseline_max_mib


def test_a_hog_vpas_maximum_cannot_hold_is_predicted_to_loop() -> None:
    need = 300 + SINGLE.baseline_max_mib
    looping = predict_vpa("Recreate", 128, 300, need - 1, SINGLE)
    assert (looping.mode, looping.limit_mib, looping.ceiling_mib, looping.need_mib, looping.max_mib) == (
        "Recreate",
        128,
        300,
        need,
        need - 1,
    )
    assert looping.outcome == LOOPING
    assert looping.why == f"VPA may give at most {need - 1} MiB (maxAllowed), and the hog needs {need} to hold"
    assert predict_vpa("Recreate", 128, 300, need, SINGLE).outcome == HELD
    # The bump within the maximum: VPA caps its own answer.
    assert predict_vpa("Recreate", 128, 140, 200, SINGLE).bump_mib == 200


def test_no_kill_or_no_ceiling_leaves_vpa_nothing_to_answer() -> None:
    with pytest.raises(NothingToAnswer) as caught:
        predict_vpa("Auto", 128, 0, 512, SINGLE)
    assert str(caught.value) == (
        "the hog has no ceiling (memoryCeilingMb): it grows until killed at any limit, so VPA has no answer to "
        "judge; set a ceiling above the limit (pulumi config set memoryCeilingMb ...)"
    )
    room = SINGLE.room_mib(128)
    with pytest.raises(NothingToAnswer) as caught:
        predict_vpa("Auto", 128, room, 512, SINGLE)
    assert str(caught.value) == (
        f"the hog holds at its ceiling ({room} MiB) under its own limit (128 MiB): no kill for VPA to answer; set "
        "memoryCeilingMb above the limit"
    )
    assert predict_vpa("Auto", 128, room + 1, 512, SINGLE).outcome == HELD


def seen(**changes: Any) -> VpaSeen:
    fields: dict[str, Any] = {
        "kills": 2,
        "first_kill_s": 3.0,
        "recommendation_before_mib": None,
        "recommendation_after_mib": 283,
        "bumped_s": 11.0,
        "applied_how": "in-place",
        "applied_mib": 283,
        "applied_s": 21.0,
        "held_s": 30.0,
    }
    return VpaSeen(**{**fields, **changes})


def test_the_verdict_needs_a_kill_a_bump_its_application_and_the_outcome_predicted() -> None:
    prediction = predict_vpa("InPlaceOrRecreate", 128, 160, 512, SINGLE)

    def failed(observed: VpaSeen) -> list[tuple[str, str]]:
        return [(c.name, c.detail) for c in judge_vpa(prediction, observed).failed]

    assert judge_vpa(prediction, seen()).status == PASSED
    assert judge_vpa(prediction, seen(kills=1)).status == PASSED  # one kill is one to answer
    assert judge_vpa(prediction, seen()).name == "VPA's answer (InPlaceOrRecreate)"
    assert ("a kill for VPA to answer", "0 OOM kills") in failed(seen(kills=0, first_kill_s=None))
    assert failed(seen(recommendation_after_mib=200, applied_mib=200)) == [
        ("VPA's recommendation past its OOM bump", "200 MiB, bump 228")
    ]
    assert failed(seen(recommendation_after_mib=228, applied_mib=228)) == []  # the bump itself is enough
    assert failed(seen(applied_mib=None, applied_how=None, held_s=None)) == [
        ("VPA applied it to the hog", "never at None MiB"),
        ("the hog held as predicted", "looping, predicted held"),
    ]
    assert failed(seen(applied_mib=282)) == [("VPA applied it to the hog", "in-place at 282 MiB")]
    assert failed(seen(kills_after_held=1)) == [("the hog held as predicted", "looping, predicted held")]
    # A recommendation seen with no kill seen first is not VPA's answer to one.
    assert [name for name, _ in failed(seen(first_kill_s=None))] == ["VPA's recommendation past its OOM bump"]
    looping = predict_vpa("Recreate", 128, 600, 300, SINGLE)
    assert judge_vpa(looping, seen(held_s=None, recommendation_after_mib=300, applied_mib=300)).status == PASSED
    assert judge_vpa(looping, seen(recommendation_after_mib=300, applied_mib=300)).status == FAILED


def test_seconds_between_two_moments_seen() -> None:
    assert seconds_between(3.0, 11.04) == 8.0
    assert seconds_between(3.0, 11.26) == 8.3  # to a tenth
    assert seconds_between(None, 11.0) is None
    assert seconds_between(3.0, None) is None


# -- the watch's bookkeeping ------------------------------------------------------------------------------------


def pod(name: str, limit: str, state: str, killed: str | None = None, restarts: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "oom-killer",
        "state": {state: {}},
        "resources": {"limits": {"memory": limit}},
        "restartCount": restarts,
    }
    if killed:
        status["lastState"] = {"terminated": {"reason": "OOMKilled", "containerID": killed, "exitCode": 137}}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [status]}}


def vpa_object(target: str | None) -> dict[str, Any]:
    if target is None:
        return {"status": {}}
    recommendation = {"containerName": "oom-killer", "target": {"memory": target}}
    return {"status": {"recommendation": {"containerRecommendations": [recommendation]}}}


def test_the_watch_sees_the_kill_the_bump_and_the_limit_applied_in_place() -> None:
    watch = Watch("oom-killer", 228)
    assert watch.see_vpa(vpa_object(None), 100.0) is None
    said = watch.see_pods([pod("a", "128Mi", "waiting", killed="containerd://1", restarts=1)], 101.0)
    assert [logfmt.parse(line)["event"] for line in said] == ["death"]
    assert watch.see_pods([pod("a", "128Mi", "waiting", killed="containerd://1", restarts=1)], 102.0) == []  # once
    assert watch.see_vpa(vpa_object("297164212"), 110.0) == 283
    assert watch.see_vpa(vpa_object("297164212"), 111.0) is None  # no change
    # The limit applied while it waits is not yet a pod running with it.
    assert watch.see_pods([pod("a", "297164212", "waiting", killed="containerd://1")], 118.0) == []
    applied = watch.see_pods([pod("a", "297164212", "running", killed="containerd://1")], 120.0)
    assert logfmt.parse(applied[0]) == {"event": "vpa-applied", "pod": "a", "how": "in-place", "limit_mib": "283"}
    watch.held_at = 125.0
    result = watch.seen(100.0)
    assert result == VpaSeen(1, 1.0, None, 283, 10.0, "in-place", 283, 20.0, 25.0, 0)
    assert seen_outcome(result) == "held"


def test_a_recreated_pod_and_the_updaters_event_say_how_it_was_applied() -> None:
    watch = Watch("oom-killer", 228)
    watch.see_pods([pod("a", "128Mi", "waiting", killed="containerd://1")], 1.0)
    watch.see_vpa(vpa_object("283Mi"), 5.0)
    watch.see_pods([pod("b", "283Mi", "running")], 9.0)
    assert watch.applied == (9.0, "new-pod", 283)
    evicted = Watch("oom-killer", 228)
    evicted.how = "evicted"
    evicted.see_pods([pod("a", "128Mi", "waiting", killed="containerd://1")], 1.0)
    evicted.see_vpa(vpa_object("283Mi"), 5.0)
    evicted.see_pods([pod("b", "283Mi", "running")], 9.0)
    assert evicted.applied == (9.0, "evicted", 283)


def test_a_recommendation_before_the_kill_is_the_before_and_kills_after_holding_are_counted() -> None:
    watch = Watch("oom-killer", 228)
    watch.see_vpa(vpa_object("100Mi"), 1.0)
    watch.see_pods([pod("a", "128Mi", "waiting", killed="containerd://1")], 2.0)
    watch.see_vpa(vpa_object("283Mi"), 9.0)
    watch.held_at = 20.0
    watch.see_pods([pod("a", "283Mi", "waiting", killed="containerd://2")], 25.0)
    result = watch.seen(0.0)
    assert (result.recommendation_before_mib, result.recommendation_after_mib, result.bumped_s) == (100, 283, 9.0)
    assert (result.kills, result.kills_after_held) == (2, 1)
    assert seen_outcome(result) == "looping"
    assert seen_outcome(Watch("oom-killer", 228).seen(0.0)) == "no-kill"


def test_the_prediction_is_read_from_the_vpa_object_and_the_hogs_container() -> None:
    container = {"name": "oom-killer", "resources": {"limits": {"memory": "128Mi"}}}
    vpa = {
        "spec": {
            "updatePolicy": {"updateMode": "Auto"},
            "resourcePolicy": {"containerPolicies": [{"containerName": "*", "maxAllowed": {"memory": "1Gi"}}]},
        }
    }
    prediction = predict_from(vpa, container, {"MEMORY_CEILING_MB": "160"})
    assert (prediction.mode, prediction.limit_mib, prediction.max_mib, prediction.outcome) == ("Auto", 128, 1024, HELD)
    with pytest.raises(verify.arguments.BadArguments, match="--vpa: the hog has no ceiling"):
        predict_from(vpa, container, {})


@pytest.mark.parametrize("other", ["--prometheus=http://p:9090", "--save=x.json", "--report=r.html", "--junit=j.xml"])
def test_vpa_watches_alone(other: str) -> None:
    err = io.StringIO()
    assert verify.main(["--vpa", other], out=io.StringIO(), err=err) == verify.EXIT_BAD_ARGUMENTS
    (line,) = err.getvalue().splitlines()
    assert line.startswith("verify: --vpa watches VPA's answer alone: --")
