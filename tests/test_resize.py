"""oom-killer resize without a cluster: what a limit changed in place will do (refused, held, killed, or a race
between two), the patch it sends (VPA's: the limit, and a Guaranteed pod's request with it; a Burstable pod's limit
alone, never at or below its request), what it reads of the pod and the hog's log, the watch of the kubelet's answer
against a pod that changes as the kubelet changes it, and the verdict. The real kubelet's answers:
tests/e2e/test_resize.py."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest

from oomtools import cli, resize
from oomtools.resize import command
from oomtools.resize.pod import hog_state, read_pod, refusal, resize_patch, target_of
from oomtools.resize.predict import HELD, KILLED, REFUSED, UNSEEN_MIB, HogState, Outcome, judge, predict_resize
from oomtools.verdict import FAILED, PASSED
from oomtools.verify.arguments import BadArguments
from workload import logfmt
from workload.predict import predict_kill

MIB = 1024 * 1024


def hog(**changes: Any) -> HogState:
    """A hog at 128 MiB, 8 MiB a step every 1.5 s, charged 12 MiB before its first step, at step 3 (36 MiB)."""
    fields: dict[str, Any] = {
        "limit_mib": 128,
        "usage_mib": 36,
        "step": 3,
        "holding": False,
        "increment_mib": 8,
        "interval_ms": 1500,
        "ceiling_mib": None,
        "charged_mib": 12,
        "reclaimable_mib": 0,
    }
    return HogState(**{**fields, **changes})


# -- the prediction ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to_mib", [1, 20, 36])
def test_a_limit_at_or_below_the_charge_is_refused_whatever_the_hog_does(to_mib: int) -> None:
    for state in (hog(), hog(holding=True), hog(ceiling_mib=40)):
        prediction = predict_resize(state, to_mib)
        assert (prediction.to_mib, prediction.outcomes) == (to_mib, (REFUSED,))
        assert prediction.why == "the container is charged 36 MiB, at or above it"


def test_a_holding_hog_holds_under_a_limit_above_its_charge_and_the_sandbox() -> None:
    holding = hog(usage_mib=66, holding=True, ceiling_mib=54)
    assert predict_resize(holding, 66 + UNSEEN_MIB + 1).outcomes == (HELD,)
    # Within the sandbox and the log's rounding of its charge, the kubelet's pod usage may still be at or above it.
    assert predict_resize(holding, 72).why == "above the charge the hog holds at (66 MiB)"
    for to_mib in (67, 66 + UNSEEN_MIB):
        prediction = predict_resize(holding, to_mib)
        assert (prediction.to_mib, prediction.outcomes) == (to_mib, (REFUSED, HELD))
        assert prediction.why == "within 5 MiB of the charge the hog holds at (66 MiB)"
    assert (predict_resize(holding, 72).to_mib, predict_resize(holding, 72).kill) == (72, None)


def test_a_restarted_pod_may_hold_its_earlier_runs_charge_which_widens_the_band() -> None:
    # On cgroup v1 a killed container's page cache moves to the pod: the kubelet's figure for the pod, 13.5 MiB above
    # the hog's own in a CI run. Held at 65 MiB, 76 is then within reach of it.
    fresh, restarted = hog(usage_mib=65, holding=True), hog(usage_mib=65, holding=True, restarted=True)
    assert (fresh.unseen_mib, restarted.unseen_mib) == (UNSEEN_MIB, UNSEEN_MIB + 16)
    assert predict_resize(fresh, 76).outcomes == (HELD,)
    widened = predict_resize(restarted, 76)
    assert (widened.outcomes, widened.why) == ((REFUSED, HELD), "within 21 MiB of the charge the hog holds at (65 MiB)")
    assert predict_resize(restarted, 86).outcomes == (REFUSED, HELD)
    assert predict_resize(restarted, 87).outcomes == (HELD,)
    growing = hog(usage_mib=30, step=3, ceiling_mib=20, restarted=True)
    assert predict_resize(growing, 51).why == "within 21 MiB of its charge (30 MiB)"
    assert predict_resize(growing, 52).outcomes == (HELD,)


def test_a_growing_hog_is_killed_in_the_steps_the_new_limit_gives() -> None:
    prediction = predict_resize(hog(), 88)
    assert prediction.outcomes == (KILLED,)
    assert prediction.kill is not None
    # 88 MiB less the 12 charged: the earliest also leaves room for the sandbox and the kernel's growth.
    assert (prediction.kill.earliest, prediction.kill.latest) == (9, 10)
    same = predict_kill(88 * MIB, 12 * MIB, 8, 1500, None, unseen_bytes=4 * MIB)
    assert same is not None
    assert prediction.kill == same
    assert (prediction.to_mib, prediction.why) == (88, "it grows past it in step 9..10")
    # What the kernel can take back of its first charge widens the range as the start line's does: 8 MiB, a step.
    reclaiming = predict_resize(hog(reclaimable_mib=8), 88).kill
    assert reclaiming is not None
    assert (reclaiming.earliest, reclaiming.latest) == (9, 11)


def test_a_limit_the_hogs_steps_reach_before_the_kubelet_may_apply_it_is_a_race() -> None:
    # 1.5 s a step: the kubelet's 5 s are four steps. Charged 44 MiB at step 4, the steps reach 80 MiB in step 8
    # (with the sandbox and the kernel's growth): the kubelet may apply it first (a kill) or read the charge after
    # the steps (a refusal).
    prediction = predict_resize(hog(usage_mib=44, step=4), 80)
    assert (prediction.to_mib, prediction.outcomes) == (80, (REFUSED, KILLED))
    assert prediction.why == "its steps may reach it (step 8) within 5 s, before the kubelet applies it"
    assert prediction.kill is not None
    assert prediction.kill.earliest == 8
    # A step further out it is no race.
    further = predict_resize(hog(usage_mib=44, step=4), 88)
    assert further.outcomes == (KILLED,)
    assert further.kill is not None
    assert further.kill.earliest == 9
    # At a step a second, five steps are the kubelet's (step 4 + 5 reaches step 9); at 1.25 s, four; any part of a
    # step counts as one; as fast as it can, every step is.
    assert predict_resize(hog(usage_mib=44, step=4, interval_ms=1000), 88).outcomes == (REFUSED, KILLED)
    assert predict_resize(hog(usage_mib=36, step=3, interval_ms=1000), 88).outcomes == (KILLED,)
    assert predict_resize(hog(usage_mib=44, step=4, interval_ms=1250), 88).outcomes == (KILLED,)
    assert predict_resize(hog(usage_mib=44, step=4, interval_ms=1249), 88).outcomes == (REFUSED, KILLED)
    assert predict_resize(hog(usage_mib=20, step=1, interval_ms=0), 500).outcomes == (REFUSED, KILLED)
    # A millisecond a step: the kubelet's 5 s are 5000 steps, and a limit ~3000 steps away is still within them.
    fast = hog(usage_mib=13, step=1, increment_mib=1, interval_ms=1)
    assert predict_resize(fast, 3000).outcomes == (REFUSED, KILLED)
    assert predict_resize(fast, 6000).outcomes == (KILLED,)


def test_a_growing_hog_whose_ceiling_fits_under_the_new_limit_holds() -> None:
    fits = predict_resize(hog(ceiling_mib=40), 80)
    assert (fits.to_mib, fits.outcomes, fits.why) == (80, (HELD,), "its ceiling (40 MiB allocated) fits under it")
    near = predict_resize(hog(ceiling_mib=24, usage_mib=36), 40)  # it grows no more, but the sandbox counts
    assert (near.to_mib, near.outcomes, near.why) == (40, (REFUSED, HELD), "within 5 MiB of its charge (36 MiB)")
    assert predict_resize(hog(ceiling_mib=40), 38).outcomes == (REFUSED, KILLED)  # its next step reaches 38
    assert predict_resize(hog(ceiling_mib=120), 100).outcomes == (KILLED,)


# -- the verdict ------------------------------------------------------------------------------------------------


def test_the_verdict_holds_the_outcome_the_limit_and_the_kill_to_the_prediction() -> None:
    def failed(prediction: Any, outcome: Outcome) -> list[tuple[str, str]]:
        return [(c.name, c.detail) for c in judge(prediction, outcome).failed]

    killed = predict_resize(hog(), 88)
    good = Outcome(KILLED, 12.0, applied_mib=88, kill_step=9, reason="OOMKilled", exit_code=137)
    assert judge(killed, good).status == PASSED
    assert judge(killed, good).name == "resize to 88 MiB"
    late = Outcome(KILLED, 12.0, applied_mib=88, kill_step=11, reason="OOMKilled", exit_code=137)
    assert failed(killed, late) == [("the kill in a step predicted", "step 11, predicted 9..10")]
    error = Outcome(KILLED, 12.0, applied_mib=88, kill_step=9, reason="Error", exit_code=1)
    assert failed(killed, error) == [("killed by the kernel", "Error 1")]
    signalled = Outcome(KILLED, 12.0, applied_mib=88, kill_step=9, reason="Error", exit_code=137)  # a kill -9
    assert failed(killed, signalled) == [("killed by the kernel", "Error 137")]
    no_step = Outcome(KILLED, 12.0, applied_mib=88, reason="OOMKilled", exit_code=137)
    assert failed(killed, no_step) == [("the kill in a step predicted", "no step to hold the kill to")]
    held = Outcome(HELD, 30.0, applied_mib=88)
    assert failed(killed, held) == [("the outcome predicted", "held, predicted killed")]
    nothing = Outcome(None, 180.0, "no answer within --timeout")
    assert failed(killed, nothing) == [("the outcome predicted", "none, predicted killed (no answer within --timeout)")]
    silent = Outcome(None, 180.0)
    assert failed(killed, silent) == [("the outcome predicted", "none, predicted killed (the pod showed none)")]

    holds = predict_resize(hog(holding=True, usage_mib=66), 80)
    assert judge(holds, Outcome(HELD, 15.0, applied_mib=80)).status == PASSED
    assert failed(holds, Outcome(HELD, 15.0, applied_mib=128)) == [
        ("the new limit applied", "128 MiB in the container's status, 80 asked")
    ]
    race = predict_resize(hog(usage_mib=44, step=4), 80)
    assert failed(race, Outcome(HELD, 15.0, applied_mib=80)) == [
        ("the outcome predicted", "held, predicted refused|killed")
    ]
    refused = predict_resize(hog(holding=True, usage_mib=66), 48)
    assert judge(refused, Outcome(REFUSED, 1.0, "cannot decrease memory limits")).status == PASSED
    assert judge(refused, Outcome(HELD, 15.0, applied_mib=48)).status == FAILED


# -- the pod and the log ----------------------------------------------------------------------------------------


def pod(limit: str = "128Mi", request: str | None = "128Mi", *, scope: str = "container") -> dict[str, Any]:
    resources: dict[str, Any] = {"limits": {"memory": limit, "cpu": "100m"}}
    if request is not None:
        resources["requests"] = {"memory": request, "cpu": "100m"}
    spec: dict[str, Any] = {"containers": [{"name": "oom-killer", "resources": {} if scope == "pod" else resources}]}
    if scope == "pod":
        spec["resources"] = resources
    return {
        "metadata": {"name": "oom-killer-abc"},
        "spec": spec,
        "status": {
            "containerStatuses": [
                {
                    "name": "oom-killer",
                    "containerID": "containerd://one",
                    "state": {"running": {"startedAt": "now"}},
                    "resources": copy.deepcopy(resources),
                    "restartCount": 0,
                }
            ],
            "resources": copy.deepcopy(resources) if scope == "pod" else None,
        },
    }


def test_the_patch_is_vpas_and_keeps_a_guaranteed_pod_guaranteed() -> None:
    target = target_of(pod())
    assert target is not None
    assert (target.scope, target.limit_mib, target.request_mib) == ("container", 128, 128)
    assert resize_patch(target, 88) == [
        {"op": "replace", "path": "/spec/containers/0/resources/limits/memory", "value": "88Mi"},
        {"op": "replace", "path": "/spec/containers/0/resources/requests/memory", "value": "88Mi"},
    ]
    burstable = target_of(pod(request="32Mi"))
    assert burstable is not None
    # A Burstable pod (memoryRequestMb) keeps its request: its limit alone is patched (refusal() keeps it above).
    assert resize_patch(burstable, 88) == [
        {"op": "replace", "path": "/spec/containers/0/resources/limits/memory", "value": "88Mi"}
    ]
    # Undone: the old limit and request, as they were.
    assert [op["value"] for op in resize_patch(burstable, 128, 32)] == ["128Mi", "32Mi"]
    pod_scoped = target_of(pod(scope="pod"))
    assert pod_scoped is not None
    assert pod_scoped.scope == "pod"
    assert {op["path"] for op in resize_patch(pod_scoped, 64)} == {
        "/spec/resources/limits/memory",
        "/spec/resources/requests/memory",
    }
    assert target_of(pod(limit="1Gi")).limit_mib == 1024  # type: ignore[union-attr]
    unlimited = pod()
    del unlimited["spec"]["containers"][0]["resources"]["limits"]
    assert target_of(unlimited) is None


def test_a_burstable_pods_limit_at_or_below_its_request_is_refused_before_any_patch() -> None:
    burstable = target_of(pod(request="48Mi"))
    assert burstable is not None
    assert (burstable.burstable, burstable.request_mib) == (True, 48)
    for to_mib in (48, 20):  # at the request it would be Guaranteed; below it the request would pass the limit
        assert refusal(burstable, to_mib) == (
            f"--to-mb {to_mib}: pod oom-killer-abc is Burstable (memory request 48 MiB, limit 128 MiB) and resize "
            "keeps its request: a limit at or below the request would change its QoS class, which the API server "
            "refuses; give more than 48"
        )
    assert refusal(burstable, 49) is None
    assert refusal(burstable, 200) is None  # above the limit: the LimitRange's to refuse, as for any pod
    pod_level = target_of(pod(request="48Mi", scope="pod"))
    assert pod_level is not None
    assert pod_level.burstable
    assert refusal(pod_level, 48) is not None
    assert resize_patch(pod_level, 64) == [{"op": "replace", "path": "/spec/resources/limits/memory", "value": "64Mi"}]
    # A Guaranteed pod moves its request with its limit, whatever the size.
    guaranteed = target_of(pod())
    assert guaranteed is not None
    assert not guaranteed.burstable
    assert refusal(guaranteed, 20) is None


def test_a_burstable_pods_refusal_is_exit_2_in_one_line_with_nothing_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole command, its cluster replaced by a pod the kubelet would run (no step logged yet: the refusal needs
    # none, the pod's request is enough).
    kubelet = Kubelet(pod(request="48Mi"), "", lambda *_: None)
    selector = type("Selector", (), {"match_labels": {"app": "x"}})
    workload = type("Workload", (), {"spec": type("Spec", (), {"selector": selector})})
    monkeypatch.setattr(command, "kube_api", lambda *_: (None, None))
    monkeypatch.setattr(command, "until_answers", lambda *_: workload)
    monkeypatch.setattr(command, "Pods", lambda *_: kubelet)
    outputs = '{"namespace": "oom-killer", "workloadName": "oom-killer", "workloadKind": "Deployment"}'
    out, err = io.StringIO(), io.StringIO()
    assert (
        resize.main(["--to-mb", "48", "--timeout", "2s", "--outputs", outputs], out=out, err=err)
        == resize.EXIT_BAD_ARGUMENTS
        == 2
    )
    assert out.getvalue() == ""
    (line,) = err.getvalue().splitlines()
    assert line.startswith("resize: --to-mb 48: pod oom-killer-abc is Burstable (memory request 48 MiB, limit 128 MiB)")
    assert "the API server refuses" in line
    assert kubelet.patches == []


def test_a_burstable_hogs_swap_moves_the_kill_out_by_as_much() -> None:
    # LimitedSwap sizes a Burstable container's swap by its request, which a resize keeps: the kernel swaps that
    # much out before it kills at the new limit, as the hog's own start line predicts.
    swapping = predict_resize(hog(swap_mib=16), 88)
    plain = predict_resize(hog(), 88)
    assert swapping.kill is not None
    assert plain.kill is not None
    assert swapping.kill == predict_kill(88 * MIB, 12 * MIB, 8, 1500, None, 16 * MIB, unseen_bytes=4 * MIB)
    assert (swapping.kill.earliest, swapping.kill.latest) == (plain.kill.earliest + 2, plain.kill.latest + 2)
    read = hog_state(128, log_of({**START, "swap_max_mib": 16}, {"event": "step", "step": 1, "cgroup_usage_mib": 20}))
    assert read is not None
    assert read.swap_mib == 16
    without = hog_state(128, log_of(START, {"event": "step", "step": 1, "cgroup_usage_mib": 20}))
    assert without is not None
    assert without.swap_mib == 0


def log_of(*lines: dict[str, object]) -> str:
    return "\n".join(logfmt.line(**fields) for fields in lines) + "\n"


START = {
    "event": "start",
    "limit_mib": 128,
    "increment_mib": 8,
    "interval_ms": 1500,
    "ceiling_mib": 84,
    "cgroup_usage_mib": 12,
    "reclaimable_mib": 1,
}


def test_the_hog_is_read_from_its_last_run_in_the_log() -> None:
    assert hog_state(128, log_of(START)) is None  # no step yet: nothing to predict from
    growing = hog_state(
        128,
        log_of(
            START,
            {"event": "step", "step": 1, "cgroup_usage_mib": 20},
            {"event": "step", "step": 2, "cgroup_usage_mib": 28},
        ),
    )
    assert growing == HogState(128, 28, 2, False, 8, 1500, 84, 12, 1)
    holding = hog_state(
        88,
        log_of(
            START,
            {"event": "step", "step": 1, "cgroup_usage_mib": 20},
            {**START, "limit_mib": 88, "ceiling_mib": 54},
            {"event": "step", "step": 7, "cgroup_usage_mib": 66},
            {"event": "holding", "ceiling_mib": 54, "cgroup_usage_mib": 66},
        ),
    )
    assert holding is not None
    assert (holding.limit_mib, holding.usage_mib, holding.step, holding.holding, holding.ceiling_mib) == (
        88,
        66,
        7,
        True,
        54,
    )
    again = hog_state(128, log_of(START, {"event": "step", "step": 1, "cgroup_usage_mib": 20}), restarted=True)
    assert again is not None
    assert again.restarted
    no_cgroup = log_of({**START, "cgroup_usage_mib": None}, {"event": "step", "step": 1, "cgroup_usage_mib": None})
    assert hog_state(128, no_cgroup) is None


REFUSAL = (
    "cannot decrease memory limits: [attempting to set pod memory limit (50331648) below current usage (70000000), "
    'attempting to set container "oom-killer" memory limit (50331648) below current usage (70000000)]'
)


def test_the_pod_shows_a_refusal_an_applied_limit_and_the_patched_containers_kill() -> None:
    shown = pod()
    target = target_of(shown)
    assert target is not None
    assert read_pod(shown, target, "containerd://one").applied_mib == 128
    shown["status"]["conditions"] = [
        {"type": "PodResizeInProgress", "status": "True", "reason": "Error", "message": REFUSAL}
    ]
    assert read_pod(shown, target, "containerd://one").refused == REFUSAL
    shown["status"]["conditions"] = [{"type": "PodResizeInProgress", "status": "True"}]
    assert read_pod(shown, target, "containerd://one").in_progress
    status = shown["status"]["containerStatuses"][0]
    status["lastState"] = {"terminated": {"containerID": "containerd://zero", "reason": "OOMKilled", "exitCode": 137}}
    assert read_pod(shown, target, "containerd://one").killed is None  # an earlier run's kill is not this one
    status["lastState"] = {"terminated": {"containerID": "containerd://one", "reason": "OOMKilled", "exitCode": 137}}
    assert read_pod(shown, target, "containerd://one").killed == status["lastState"]["terminated"]


# -- the watch, against a pod the kubelet changes ---------------------------------------------------------------


class Kubelet:
    """The pods API of one pod, answering as the kubelet would after a resize: `then(pod, patches)` changes it at
    each read after the patch."""

    def __init__(self, shown: dict[str, Any], log: str, then: Any) -> None:
        self.shown, self.log_text, self.then = shown, log, then
        self.patches: list[list[dict[str, str]]] = []
        self.reads = 0

    def listed(self, _selector: str) -> list[dict[str, Any]]:
        return [self.shown]

    def read(self, _name: str) -> dict[str, Any]:
        self.reads += 1
        if self.patches:
            self.then(self.shown, self.patches, self.reads)
        return copy.deepcopy(self.shown)

    def log(self, _name: str, _container: str) -> str:
        return self.log_text

    def patch(self, _name: str, ops: list[dict[str, str]]) -> None:
        self.patches.append(ops)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("oomtools.resize.command.time.sleep", lambda _seconds: None)


def applied(limit: str) -> Any:
    def then(shown: dict[str, Any], _patches: object, _reads: int) -> None:
        shown["status"]["containerStatuses"][0]["resources"]["limits"]["memory"] = limit
        shown["status"]["conditions"] = []

    return then


def watched(kubelet: Kubelet, state: HogState, to_mib: int, hold: float = 15.0) -> tuple[Outcome, list[str]]:
    target = target_of(kubelet.shown)
    assert target is not None
    prediction = predict_resize(state, to_mib)
    kubelet.patch(target.pod, resize_patch(target, to_mib))
    said: list[str] = []
    outcome = command.watch_outcome(
        kubelet,  # type: ignore[arg-type]
        target,
        "containerd://one",
        state,
        prediction,
        hold,
        1000.0,
        Clock(),
        said.append,
    )
    return outcome, said


def test_an_applied_limit_that_holds_is_watched_for_hold_seconds() -> None:
    kubelet = Kubelet(pod(), "", applied("80Mi"))
    outcome, said = watched(kubelet, hog(holding=True, usage_mib=66), 80, hold=15.0)
    assert outcome.what == HELD
    assert outcome.applied_mib == 80
    assert outcome.seconds >= 15.0
    assert logfmt.parse(said[0])["event"] == "applied"


def test_a_kill_after_the_new_limit_applied_is_the_resizes_kill() -> None:
    def then(shown: dict[str, Any], patches: object, reads: int) -> None:
        applied("88Mi")(shown, patches, reads)
        if reads >= 4:
            status = shown["status"]["containerStatuses"][0]
            status["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
            status["lastState"] = {
                "terminated": {
                    "containerID": "containerd://one",
                    "reason": "OOMKilled",
                    "exitCode": 137,
                    "message": logfmt.line(event="step", step=8, cgroup_usage_mib=84),
                }
            }

    outcome, _ = watched(Kubelet(pod(), "", then), hog(), 88)
    assert (outcome.what, outcome.kill_step, outcome.reason, outcome.exit_code) == (KILLED, 9, "OOMKilled", 137)
    assert judge(predict_resize(hog(), 88), outcome).status == PASSED


def test_a_kill_under_the_old_limit_is_not_the_resizes() -> None:
    def then(shown: dict[str, Any], _patches: object, _reads: int) -> None:
        shown["status"]["containerStatuses"][0]["lastState"] = {
            "terminated": {"containerID": "containerd://one", "reason": "OOMKilled", "exitCode": 137}
        }

    outcome, _ = watched(Kubelet(pod(), "", then), hog(), 88)
    assert outcome.what is None
    assert "before the new limit" in outcome.detail


def test_a_refusal_is_read_from_the_condition_and_withdrawn() -> None:
    def then(shown: dict[str, Any], patches: list[object], _reads: int) -> None:
        refusing = len(patches) == 1
        shown["status"]["conditions"] = (
            [{"type": "PodResizeInProgress", "status": "True", "reason": "Error", "message": REFUSAL}]
            if refusing
            else []
        )

    kubelet = Kubelet(pod(), "", then)
    outcome, _ = watched(kubelet, hog(holding=True, usage_mib=66), 48)
    assert (outcome.what, outcome.detail) == (REFUSED, REFUSAL)
    target = target_of(kubelet.shown)
    assert target is not None
    assert command.withdraw(kubelet, target, Clock())  # type: ignore[arg-type]
    assert [op["value"] for op in kubelet.patches[-1]] == ["128Mi", "128Mi"]


def test_an_error_the_kubelet_retries_is_not_a_refusal() -> None:
    # No stats for the container yet: the kubelet says so in the same condition, then applies it at a later sync.
    missing = 'cannot decrease memory limits: [missing container "oom-killer" memory usage]'

    def then(shown: dict[str, Any], patches: object, reads: int) -> None:
        if reads < 4:
            shown["status"]["conditions"] = [
                {"type": "PodResizeInProgress", "status": "True", "reason": "Error", "message": missing}
            ]
        else:
            applied("80Mi")(shown, patches, reads)

    shown = pod()
    target = target_of(shown)
    assert target is not None
    shown["status"]["conditions"] = [
        {"type": "PodResizeInProgress", "status": "True", "reason": "Error", "message": missing}
    ]
    reading = read_pod(shown, target, "containerd://one")
    assert (reading.refused, reading.error) == (None, missing)
    outcome, said = watched(Kubelet(pod(), "", then), hog(holding=True, usage_mib=66), 80, hold=5.0)
    assert outcome.what == HELD
    assert [logfmt.parse(line)["event"] for line in said] == ["kubelet-error", "applied"]
    # runc's own refusal, where the write itself failed (cgroup v1's EBUSY), is one.
    shown["status"]["conditions"][0]["message"] = (
        "failed to update resources: unable to set memory limit to 50331648 (current usage: 69726208, peak usage: 1)"
    )
    assert read_pod(shown, target, "containerd://one").refused is not None
    # Timed out on an error: the detail says which.
    never = Kubelet(
        pod(),
        "",
        lambda shown, *_: shown["status"].update(
            conditions=[{"type": "PodResizeInProgress", "status": "True", "reason": "Error", "message": missing}]
        ),
    )
    outcome, _ = watched(never, hog(holding=True, usage_mib=66), 80)
    assert outcome.what is None
    assert f"the kubelet's error: {missing}" in outcome.detail


def test_no_answer_within_the_timeout_is_no_outcome() -> None:
    kubelet = Kubelet(pod(), "", lambda *_: None)
    outcome, _ = watched(kubelet, hog(holding=True, usage_mib=66), 80)
    assert outcome.what is None
    assert "no answer within --timeout" in outcome.detail


def test_a_growing_hog_is_patched_right_after_its_next_line() -> None:
    lines = [START, {"event": "step", "step": 1, "cgroup_usage_mib": 20}]
    kubelet = Kubelet(pod(), log_of(*lines), lambda *_: None)
    reads = {"count": 0}

    def log(_name: str, _container: str) -> str:
        reads["count"] += 1
        if reads["count"] >= 3:
            return log_of(*lines, {"event": "step", "step": 2, "cgroup_usage_mib": 28})
        return log_of(*lines)

    kubelet.log = log  # type: ignore[method-assign]
    _target, container_id, state = command.ready(kubelet, "app=x", None, 1000.0, Clock())  # type: ignore[arg-type]
    assert (container_id, state.step, state.usage_mib, state.restarted) == ("containerd://one", 2, 28, False)
    kubelet.shown["status"]["containerStatuses"][0]["restartCount"] = 2
    reads["count"] = 0
    *_, again = command.ready(kubelet, "app=x", None, 1000.0, Clock())  # type: ignore[arg-type]
    assert again.restarted


def test_several_pods_need_one_named() -> None:
    one, two = pod(), pod()
    two["metadata"]["name"] = "oom-killer-def"
    with pytest.raises(BadArguments, match="--pod"):
        command.choose_pod([one, two], None)
    assert command.choose_pod([one, two], "oom-killer-def") is two


# -- the command line -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "lots"])
def test_a_bad_size_is_one_line_and_exit_2(value: str) -> None:
    err = io.StringIO()
    assert resize.main(["--to-mb", value], out=io.StringIO(), err=err) == 2
    (line,) = err.getvalue().splitlines()
    assert line.startswith("resize: ")
    assert "--to-mb" in line
    assert value in line


def test_the_command_is_a_subcommand_of_oom_killer() -> None:
    assert cli.COMMANDS["resize"] is resize.main
    with pytest.raises(SystemExit) as stopped:
        cli.build_parser().parse_args(["resize", "--help"])
    assert stopped.value.code == 0
