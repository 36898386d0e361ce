"""verify's judge, item by item: the result tree a user reads in the report's checks table (each check, and under it
each kill it was judged over) and in --json, for the runs that must not pass. make mutation (tests/mutation.py) found
the verdict line alone let wrong items through: a kill named without its time, a check over no kill that passed, an
OOMKilled with another exit code taken as an OOM kill."""

from __future__ import annotations

import datetime

from oomtools import verify
from oomtools.verdict import tree_json
from oomtools.verify import judge
from oomtools.verify.detectors import AT_START, CONTAINER, NO, UNREAD, WORKER, YES, Coverage, Kill
from workload.predict import KillRange

T0 = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
STEPPED = verify.Prediction(True, False, 6, 8, 1, KillRange(7, 8, 8, 1000))  # the dev stack's: steps 7..8, 6..8 s


def death(
    container_id: str, reason: str, exit_code: int, last_step: int | None, at: float, seconds: float
) -> verify.Death:
    """A death of the pod's container that started `at` seconds after T0 and ran `seconds`."""
    started = T0 + datetime.timedelta(seconds=at)
    message = "" if last_step is None else f"event=step step={last_step} allocated_mib={16 * last_step}"
    finished = started + datetime.timedelta(seconds=seconds)
    return verify.Death("hog-1", "oom-killer", container_id, reason, exit_code, message, started, finished, 0)


def observed_with(*deaths: verify.Death) -> verify.Observed:
    observed = verify.Observed()
    observed.deaths = {d.container_id: d for d in deaths}
    return observed


def test_the_kill_loops_tree_names_each_kill_by_its_time_and_judges_each_one() -> None:
    observed = observed_with(
        death("a", "OOMKilled", 137, 7, 0, 7),  # step 8 at 7 s: as announced, on time
        death("b", "OOMKilled", 137, 4, 20, 15),  # step 5 at 15 s: early, and late
        death("c", "Error", 1, 2, 40, 3),  # another death
        death("d", "OOMKilled", 1, 7, 60, 7),  # OOMKilled with another exit code: not the kernel's kill
    )
    tree = tree_json(judge.verdict(judge.checks_for(STEPPED, observed, 2, [])))
    assert tree == {
        "name": "oom-killer verify",
        "status": "failed",
        "detail": "",
        "children": [
            {"name": "2 OOM kills (OOMKilled, exit code 137)", "status": "passed", "detail": "oom_kills=2"},
            {
                "name": "no other death",
                "status": "failed",
                "detail": "Error/1 OOMKilled/1",
                "children": [
                    {"name": "hog-1/oom-killer@12:00:43", "status": "failed", "detail": "Error/1"},
                    {"name": "hog-1/oom-killer@12:01:07", "status": "failed", "detail": "OOMKilled/1"},
                ],
            },
            {
                "name": "each kill in an announced step",
                "status": "failed",
                "detail": "predicted_steps=7..8 seen=8(2/2),5(early)",
                "children": [
                    {"name": "hog-1/oom-killer@12:00:07", "status": "passed", "detail": "step 8"},
                    {"name": "hog-1/oom-killer@12:00:35", "status": "failed", "detail": "step 5"},
                ],
            },
            {
                "name": "each kill on time",
                "status": "failed",
                "detail": "predicted=6..8s seen=7,15",
                "children": [
                    {"name": "hog-1/oom-killer@12:00:07", "status": "passed", "detail": "7s"},
                    {"name": "hog-1/oom-killer@12:00:35", "status": "failed", "detail": "15s"},
                ],
            },
            {"name": "a back-off measured between restarts", "status": "failed", "detail": "back_offs=0"},
        ],
    }


def test_with_no_oom_kill_every_check_of_the_kills_fails_none_passes_over_nothing() -> None:
    # Kills were predicted and only another death came: the step and the time checks have no kill to hold, and
    # fail (not nothing-checked: the prediction itself failed).
    for observed in (observed_with(death("c", "Error", 1, 2, 0, 3)), verify.Observed()):
        checks = {c.name: c for c in judge.checks_for(STEPPED, observed, 1, [])}
        assert {name: c.status for name, c in checks.items()} == {
            "1 OOM kills (OOMKilled, exit code 137)": "failed",
            "no other death": "failed" if observed.deaths else "passed",
            "each kill in an announced step": "failed",
            "each kill on time": "failed",
        }
        assert checks["each kill in an announced step"].detail == "predicted_steps=7..8 seen="
        assert checks["each kill on time"].detail == "predicted=6..8s seen="


def test_a_supervised_stack_whose_container_died_did_not_live_on() -> None:
    supervised = verify.Prediction(True, True, 6, 8, 1)
    died = observed_with(death("a", "OOMKilled", 137, 7, 0, 7))  # the group's kill: no restart seen yet
    lived = {c.name: c.ok for c in judge.checks_for(supervised, died, 1, [])}
    assert lived == {"the kernel kills the worker": False, "the container lives on": False}
    restarted = verify.Observed()
    restarted.restarts = {("hog-1", "oom-killer"): 1}
    assert not {c.name: c.ok for c in judge.checks_for(supervised, restarted, 1, [])}["the container lives on"]


def test_a_ceiling_holds_only_where_the_container_runs_and_never_died() -> None:
    held = verify.Prediction(False, False, None, None, 1)
    name = "no container dies (a ceiling holds it)"
    running = verify.Observed()
    running.running = {("hog-1", "oom-killer")}
    assert [c.ok for c in judge.checks_for(held, running, 1, [])] == [True]
    assert [c.ok for c in judge.checks_for(held, verify.Observed(), 1, []) if c.name == name] == [False]
    died_and_restarted = observed_with(death("a", "Error", 1, 2, 0, 3))
    died_and_restarted.running = {("hog-1", "oom-killer")}
    assert [c.ok for c in judge.checks_for(held, died_and_restarted, 1, []) if c.name == name] == [False]


def test_the_watch_waits_the_whole_window_where_no_kill_is_predicted() -> None:
    one_kill = observed_with(death("a", "OOMKilled", 137, 7, 0, 7))
    assert judge.evidence_complete(STEPPED, 1, one_kill)
    held = verify.Prediction(False, False, None, None, 1)
    assert not judge.evidence_complete(held, 1, one_kill)  # replicas 1, no kill predicted: watch it hold
    stopped = verify.Prediction(True, False, 6, 8, 0)
    assert not judge.evidence_complete(stopped, 1, one_kill)  # replicas 0: watch that nothing runs


def kill(kind: str, second: int) -> Kill:
    return Kill(kind, "hog-1", "oom-killer", T0.timestamp() + second, f"id{second}", 1, "")


def test_the_detectors_tree_names_each_kill_and_what_each_signal_said_of_it() -> None:
    coverages = [
        Coverage(kill(CONTAINER, 7), {"pod_status": YES, "kube_state_metrics": YES, "cadvisor": NO}),
        Coverage(kill(AT_START, 30), {"pod_status": YES, "kube_state_metrics": NO}),  # no cAdvisor read for it
        Coverage(kill(WORKER, 50), {"pod_status": NO, "kube_state_metrics": UNREAD, "cadvisor": NO}),
    ]
    checks = [tree_json(item) for item in judge.coverage_checks(coverages, {"ContainerOOMKilled": True})]
    assert checks == [
        {
            "name": "detector pod_status",
            "status": "passed",  # a worker's kill is not the pod status's to see
            "detail": "saw 2 of 3 kills",
            "children": [
                {"name": "hog-1/oom-killer@12:00:07", "status": "passed", "detail": "yes"},
                {"name": "hog-1/oom-killer@12:00:30", "status": "passed", "detail": "yes"},
                {"name": "hog-1/oom-killer@12:00:50", "status": "passed", "detail": "no"},
            ],
        },
        {
            "name": "detector kube_state_metrics",
            "status": "failed",
            "detail": "saw 1 of 2 kills; missed hog-1/oom-killer@12:00:30",
            "children": [
                {"name": "hog-1/oom-killer@12:00:07", "status": "passed", "detail": "yes"},
                {"name": "hog-1/oom-killer@12:00:30", "status": "failed", "detail": "no"},
            ],
        },
        {
            "name": "detector cadvisor",
            "status": "failed",
            "detail": "saw 0 of 2 kills; missed hog-1/oom-killer@12:00:50",
            "children": [
                {"name": "hog-1/oom-killer@12:00:07", "status": "passed", "detail": "no"},
                {"name": "hog-1/oom-killer@12:00:50", "status": "failed", "detail": "no"},
            ],
        },
        {
            "name": "every kill seen by the monitoring",
            "status": "failed",
            "detail": "hog-1/oom-killer@12:00:30, hog-1/oom-killer@12:00:50",
            "children": [
                {"name": "hog-1/oom-killer@12:00:07", "status": "passed", "detail": "seen"},
                {"name": "hog-1/oom-killer@12:00:30", "status": "failed", "detail": "unseen"},
                {"name": "hog-1/oom-killer@12:00:50", "status": "failed", "detail": "unseen"},
            ],
        },
    ]
