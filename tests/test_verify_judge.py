"""verify's judge, item by item: the result tree a user reads in the report's checks table (each check, and under it
each kill it was judged over) and in --json, for the runs that must not pass. make mutation (tests/mutation.py) found
the verdict line alone let wrong items through: a kill named without its time, a check over no kill that passed, an
OOMKilled with another exit code taken as an OOM kill."""

from __future__ import annotations

import dataclasses
import datetime

from oomtools import verify
from oomtools.verdict import Item, tree_json
from oomtools.verify import judge, report
from oomtools.verify.detectors import AT_START, CONTAINER, NO, UNREAD, WORKER, YES, Coverage, Kill
from oomtools.verify.observe import BackOff
from workload import logfmt
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
    # cgroup v1: the start lines carry no oom_group, so the worker is killed alone and its container lives on.
    supervised = verify.Prediction(True, True, 6, 8, 1)
    died = observed_with(death("a", "OOMKilled", 137, 7, 0, 7))  # the group's kill: no restart seen yet
    died.starts = {"hog-1": V1_START}
    lived = {c.name: c.ok for c in judge.checks_for(supervised, died, 1, [])}
    assert lived == {"the kernel kills the worker": False, "the container lives on": False}
    restarted = verify.Observed()
    restarted.starts = {"hog-1": V1_START}
    restarted.restarts = {("hog-1", "oom-killer"): 1}
    assert not {c.name: c.ok for c in judge.checks_for(supervised, restarted, 1, [])}["the container lives on"]


# The start lines of a supervised hog (workload/supervise.py, then its worker's): on cgroup v1 no oom_group; on v2
# memory.oom.group as the kubelet set it (1 since 1.28; 0 with singleProcessOOMKill).
V1_START = {"event": "start", "process_model": "supervised", "cgroup": "v1:/kubepods/burstable/pod1/abc"}
GROUP_START = {"event": "supervisor_start", "process_model": "supervised", "oom_group": "1"}
# Its worker's line read too (observe.hog_start: the two merged), which says the limit and the swap.
GROUP_WORKER_START = {**GROUP_START, "event": "start", "cgroup": "v2:/kubepods.slice/cri-containerd-c.scope"}
SINGLE_START = {"event": "supervisor_start", "process_model": "supervised", "oom_group": "0"}
SUPERVISED = verify.Prediction(True, True, 6, 8, 1, KillRange(7, 8, 8, 1000))


def worker_kill(pod: str, second: float) -> verify.WorkerKill:
    fields = {"event": "child_exit", "signal": "SIGKILL", "container_survived": "true"}
    return verify.WorkerKill(pod, "oom-killer", T0 + datetime.timedelta(seconds=second), fields, "containerd://w1")


def group_killed(pod: str = "hog-1") -> verify.Observed:
    """Two kills of a supervised container on cgroup v2 with memory.oom.group=1: each OOMKilled with exit code 137
    in step 8 (the worker's last step line is the termination message) at 7 s, and a back-off between them."""
    observed = observed_with(death("a", "OOMKilled", 137, 7, 0, 7), death("b", "OOMKilled", 137, 7, 9, 7))
    for d in observed.deaths.values():
        d.pod = pod
    observed.back_offs = {"a": BackOff(pod, "oom-killer", 2, 1)}
    observed.restarts = {(pod, "oom-killer"): 2}
    observed.pods_seen = {pod}
    observed.starts = {pod: GROUP_WORKER_START}
    return observed


def worker_killed(start: dict[str, str], pod: str = "hog-1") -> verify.Observed:
    """A supervised container whose worker the kernel killed alone: PID 1 logged it, the container ran on."""
    observed = verify.Observed()
    observed.worker_kills = {(pod, "oom-killer", "7.5"): worker_kill(pod, 7.5)}
    observed.restarts = {(pod, "oom-killer"): 0}
    observed.running = {(pod, "oom-killer")}
    observed.pods_seen = {pod}
    observed.starts = {pod: start}
    return observed


def statuses(checks: list[Item]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_a_group_kill_on_cgroup_v2_is_judged_as_a_single_processs_kills() -> None:
    checks = judge.checks_for(SUPERVISED, group_killed(), 2, [])
    assert statuses(checks) == {
        "2 OOM kills (OOMKilled, exit code 137)": "passed",
        "no worker killed alone (one OOM kills the group)": "passed",
        "no other death": "passed",
        "each kill in an announced step": "passed",
        "each kill on time": "passed",
        "a back-off measured between restarts": "passed",
    }
    assert checks[0].detail == "oom_kills=2 supervised_end=group-kill oom_group=1"
    assert judge.evidence_complete(SUPERVISED, 2, group_killed())
    # The steps and the time are the worker's, as the stack exported them: a kill out of them is not as predicted.
    early = group_killed()
    early.deaths["b"].message = "event=step step=3 allocated_mib=48"
    assert statuses(judge.checks_for(SUPERVISED, early, 2, []))["each kill in an announced step"] == "failed"
    late = group_killed()
    late.deaths["b"].finished_at += datetime.timedelta(seconds=20)
    assert statuses(judge.checks_for(SUPERVISED, late, 2, []))["each kill on time"] == "failed"
    # Where the kernel kills the group, the worker never dies alone: a worker kill logged beside it differs.
    both = group_killed()
    both.worker_kills = worker_killed(GROUP_START).worker_kills
    assert statuses(judge.checks_for(SUPERVISED, both, 2, []))["no worker killed alone (one OOM kills the group)"] == (
        "failed"
    )


def test_oom_group_0_on_cgroup_v2_is_the_silent_worker_kill_as_on_v1() -> None:
    for start in (SINGLE_START, V1_START):
        observed = worker_killed(start)
        checks = judge.checks_for(SUPERVISED, observed, 2, [])
        assert statuses(checks) == {"the kernel kills the worker": "passed", "the container lives on": "passed"}
        oom_group = start.get("oom_group", "none")
        assert checks[0].detail == f"worker_kills=1 supervised_end=worker-kill oom_group={oom_group}"
        assert judge.evidence_complete(SUPERVISED, 2, observed)


def test_a_container_that_lived_on_where_the_group_dies_together_is_not_as_predicted() -> None:
    lived = worker_killed(GROUP_START)  # oom_group=1, yet the worker died alone and the container ran on
    checks = statuses(judge.checks_for(SUPERVISED, lived, 1, []))
    assert checks["1 OOM kills (OOMKilled, exit code 137)"] == "failed"
    assert checks["no worker killed alone (one OOM kills the group)"] == "failed"
    assert judge.verdict(judge.checks_for(SUPERVISED, lived, 1, [])).status == "failed"
    assert not judge.evidence_complete(SUPERVISED, 1, lived)  # the watch waits for the container's kill


def test_a_container_killed_whole_where_only_its_worker_should_die_is_not_as_predicted() -> None:
    for start in (SINGLE_START, V1_START):
        died = group_killed()
        died.starts = {"hog-1": start}
        checks = statuses(judge.checks_for(SUPERVISED, died, 2, []))
        assert checks == {"the kernel kills the worker": "failed", "the container lives on": "failed"}
        assert not judge.evidence_complete(SUPERVISED, 2, died)  # the watch waits for a worker's kill


def test_with_no_start_line_read_the_watch_waits_and_nothing_holds_the_prediction() -> None:
    for observed in (group_killed(), worker_killed(GROUP_START)):
        observed.starts = {}
        assert not judge.evidence_complete(SUPERVISED, 1, observed)  # not on the wrong prediction
        checks = judge.checks_for(SUPERVISED, observed, 1, [])
        assert [(c.name, c.status, c.detail) for c in checks] == [
            (
                "a kill came (the worker's, or the container's)",
                "passed",
                f"worker_kills={len(observed.worker_kills)} oom_kills={len(observed.deaths)}",
            ),
            (
                "the hog's start line says how a kill ends",
                "nothing-checked",
                "supervised_end=unread: no start line read (supervisor_start or start), so whether the container "
                "lives on (oom_group=0, or cgroup v1) or dies with its worker (oom_group=1) is not known",
            ),
        ]
        assert judge.verdict(checks).status == "nothing-checked"
    # No kill at all is not as predicted whatever the start line would have said.
    assert judge.verdict(judge.checks_for(SUPERVISED, verify.Observed(), 1, [])).status == "failed"


def test_the_supervisors_line_alone_says_the_end_before_its_workers_start_line() -> None:
    observed = group_killed()
    observed.starts = {"hog-1": {"event": "supervisor_start", "oom_group": "1"}}
    assert [p.supervised_end for p, _ in judge.resolved(SUPERVISED, observed)] == ["group-kill"]
    # A pod whose line was not read runs the same settings as the pods whose line was: judged with them.
    observed.pods_seen.add("hog-2")
    assert [p.supervised_end for p, _ in judge.resolved(SUPERVISED, observed)] == ["group-kill"]


def test_pods_whose_start_lines_differ_are_judged_each_by_its_own() -> None:
    # A Deployment's two pods on nodes of two kinds: hog-1's group killed (v2), hog-2's worker killed (v1).
    observed = group_killed("hog-1")
    other = worker_killed(V1_START, "hog-2")
    observed.worker_kills = other.worker_kills
    observed.pods_seen |= other.pods_seen
    observed.starts |= other.starts
    observed.restarts |= other.restarts
    checks = judge.checks_for(SUPERVISED, observed, 2, [])
    assert [(c.name, c.status, c.detail) for c in checks] == [
        ("pods hog-1", "passed", "supervised_end=group-kill"),
        ("pods hog-2", "passed", "supervised_end=worker-kill"),
    ]
    assert judge.evidence_complete(SUPERVISED, 2, observed)
    assert judge.alerts_expected(SUPERVISED, observed) == dict.fromkeys(
        ("ContainerOOMKilled", "ContainerCrashLooping", "ContainerOOMKillWithoutRestart"), True
    )
    # The same two pods, each with the other's start line, and a third beside hog-2 (v1, oom_group=0 on v2: both
    # the worker's kill alone) that ran on: neither group is as predicted, and each says why.
    observed.starts = {"hog-1": V1_START, "hog-2": GROUP_START, "hog-3": SINGLE_START}
    observed.pods_seen.add("hog-3")
    checks = judge.checks_for(SUPERVISED, observed, 2, [])
    assert [(c.name, c.status) for c in checks] == [("pods hog-1,hog-3", "failed"), ("pods hog-2", "failed")]
    assert checks[0].detail == (
        "supervised_end=worker-kill; the kernel kills the worker (worker_kills=0 supervised_end=worker-kill "
        "oom_group=0,none); the container lives on (deaths=2 restarts=2)"
    )
    assert not judge.evidence_complete(SUPERVISED, 2, observed)


def test_the_alerts_expected_follow_each_pods_start_line() -> None:
    group = judge.alerts_expected(SUPERVISED, group_killed())
    assert [name for name, fires in group.items() if fires] == ["ContainerOOMKilled", "ContainerCrashLooping"]
    worker = judge.alerts_expected(SUPERVISED, worker_killed(SINGLE_START))
    assert [name for name, fires in worker.items() if fires] == ["ContainerOOMKillWithoutRestart"]
    single = judge.alerts_expected(STEPPED, worker_killed(SINGLE_START))  # a single process: its start line is moot
    assert [name for name, fires in single.items() if fires] == ["ContainerOOMKilled", "ContainerCrashLooping"]


def test_a_group_killed_tmpfs_hogs_restart_starts_in_a_full_pod() -> None:
    # With the group killed, no supervisor is left to remove the worker's files: the restart dies at start, as a
    # single tmpfs hog's does; where only the worker dies, PID 1 removes them and nothing restarts.
    outputs = {"predictedSecondsToOomKill": {"earliest": 6, "latest": 8}}
    tmpfs = verify.predict(outputs, 1, {"MEMORY_KIND": "tmpfs", "PROCESS_MODEL": "supervised"})
    assert not tmpfs.restarts_into_full_pod
    assert tmpfs.read_from(GROUP_START).restarts_into_full_pod
    assert not tmpfs.read_from(SINGLE_START).restarts_into_full_pod
    assert not tmpfs.read_from(None).restarts_into_full_pod
    observed = group_killed()
    observed.deaths["b"].message = ""  # the restart, killed before its first step line
    assert [k.kind for k in judge.observed_kills(tmpfs, observed)] == [CONTAINER, AT_START]
    anonymous = verify.predict(outputs, 1, {"PROCESS_MODEL": "supervised"})
    assert [k.kind for k in judge.observed_kills(anonymous, observed)] == [CONTAINER, CONTAINER]


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
    one_kill.starts = {"hog-1": SINGLE_HOG_START}
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


# A single hog's start line: on a cgroup v1 node (no swap), and on a cgroup v2 node whose kubelet gives the Burstable
# pod 64 MiB of swap (LimitedSwap: memory.swap.max).
SINGLE_HOG_START = {"event": "start", "cgroup": "v1:/kubepods/burstable/pod1/c", "limit_mib": "128"}
SWAP_START = {"event": "start", "cgroup": "v2:/kubepods.slice/cri-containerd-c.scope", "swap_max_mib": "64"}
# The dev stack's prediction in steps of 16 MiB a second: 7..8, 6..8 s. 64 MiB of swap (up to a MiB more: the line
# rounds down) holds 3.98 to 4.05 steps of 16 MiB with their growth: the earliest 3 steps later, the latest 5.
PACED = verify.Prediction(True, False, 6, 8, 1, KillRange(7, 8, 8, 0), increment_mib=16, interval_ms=1000)


def killed_in(pod: str, *kills: tuple[int, float]) -> verify.Observed:
    """A single hog's pod killed in each (step, seconds from its container's start), with a back-off between."""
    observed = verify.Observed()
    for number, (step, seconds) in enumerate(kills):
        d = death(f"{pod}-{number}", "OOMKilled", 137, step - 1, 20 * number, seconds)
        d.pod = pod
        observed.deaths[d.container_id] = d
    observed.back_offs = {f"{pod}-0": BackOff(pod, "oom-killer", 2, 1)}
    observed.pods_seen = {pod}
    return observed


def test_swap_a_start_line_says_moves_the_steps_and_seconds_the_stack_predicted() -> None:
    swapped = PACED.read_from(SWAP_START)
    assert (swapped.steps, swapped.earliest, swapped.latest, swapped.swap_mib) == (KillRange(10, 13, 13, 0), 9, 13, 64)
    # Each step is the container's interval: 2.5 s a step moves the seconds by 7.5 and 12.5.
    slow = dataclasses.replace(PACED, interval_ms=2500).read_from(SWAP_START)
    assert (slow.steps, slow.earliest, slow.latest) == (KillRange(10, 13, 13, 0), 13.5, 20.5)
    # And the step size: in steps of 10 MiB, 64 MiB is 6.4 steps: 6 to 7 (6.5 with a MiB more).
    small = dataclasses.replace(PACED, increment_mib=10).read_from(SWAP_START)
    assert (small.steps, small.earliest, small.latest) == (KillRange(13, 15, 15, 0), 12, 15)
    # The most counts up to a MiB more than the line says (it rounds down): 1 MiB is under a 16 MiB step, yet up to
    # 2 MiB less a byte may be there, which moves the latest by one; 15 MiB less than a step with its page tables (16
    # and 1/32), 16 MiB more (17 less a byte). A step of 512 MiB: 512 MiB, and less than a MiB more, is under its 513
    # MiB with its page tables, and moves the latest by one, not two.
    for increment, mib, latest in ((16, 1, 9), (16, 15, 9), (16, 16, 10), (512, 512, 9)):
        read = dataclasses.replace(PACED, increment_mib=increment).read_from({**SWAP_START, "swap_max_mib": str(mib)})
        assert (read.steps, read.earliest, read.latest) == (KillRange(7, latest, latest, 0), 6, latest), mib
    # No swap said, 0 (under a MiB), or not a number: as predicted, the line read.
    for start in (SINGLE_HOG_START, {**SWAP_START, "swap_max_mib": "0"}, {**SWAP_START, "swap_max_mib": "x"}):
        assert PACED.read_from(start) == dataclasses.replace(PACED, swap_mib=0)
    assert PACED.read_from(None) == PACED  # none read: the settings' own
    # A stack that kills nothing (a ceiling holds it, or no replica) kills nothing with swap either.
    held = verify.Prediction(False, False, None, None, 1, increment_mib=16)
    assert held.read_from(SWAP_START) == dataclasses.replace(held, swap_mib=64)
    stopped = dataclasses.replace(PACED, kills=False, replicas=0)
    assert stopped.read_from(SWAP_START) == dataclasses.replace(stopped, swap_mib=64)
    # An older stack that exported no steps: its seconds move all the same.
    unstepped = dataclasses.replace(PACED, steps=None).read_from(SWAP_START)
    assert (unstepped.steps, unstepped.earliest, unstepped.latest) == (None, 9, 13)


def test_a_supervised_hogs_swap_moves_its_steps_as_its_oom_group_says_its_end() -> None:
    paced = dataclasses.replace(PACED, supervised=True)
    read = paced.read_from({**SWAP_START, "oom_group": "1"})
    assert (read.supervised_end, read.steps, read.swap_mib) == ("group-kill", KillRange(10, 13, 13, 0), 64)
    assert paced.read_from(GROUP_START).swap_mib == 0  # the supervisor's line says no swap: its worker's does


def test_the_prediction_takes_the_pace_from_the_containers_environment() -> None:
    outputs = {"predictedSecondsToOomKill": {"earliest": 6, "latest": 8}, "predictedOomKillStep": {"earliest": 7}}
    outputs["predictedOomKillStep"]["latest"] = 8
    paced = verify.predict(outputs, 1, {"MEMORY_INCREMENT_MB": "16", "INCREMENT_INTERVAL_MS": "2500"})
    assert (paced.increment_mib, paced.interval_ms) == (16, 2500)
    assert paced.steps == KillRange(7, 8, 8, 0)  # as exported: no expected step of its own, its seconds the stack's
    assert (verify.predict(outputs, 1, {}).increment_mib, verify.predict(outputs, 1, {}).interval_ms) == (10, 1000)
    refused = verify.predict(outputs, 1, {"MEMORY_INCREMENT_MB": "16", "INCREMENT_INTERVAL_MS": "soon"})
    assert (refused.increment_mib, refused.interval_ms) == (10, 1000)


def test_a_kill_on_a_node_with_swap_is_held_to_the_moved_steps_and_time() -> None:
    moved = killed_in("hog-1", (11, 10), (12, 11))
    unmoved = killed_in("hog-1", (8, 7), (8, 7))
    for observed, start, verdict, steps, seen in (
        (moved, SWAP_START, "passed", "10..13", "11(2/4),12(3/4)"),
        (unmoved, SWAP_START, "failed", "10..13", "8(early),8(early)"),
        (unmoved, SINGLE_HOG_START, "passed", "7..8", "8(2/2),8(2/2)"),
        (moved, SINGLE_HOG_START, "failed", "7..8", "11(late),12(late)"),
    ):
        observed.starts = {"hog-1": start}
        checks = {c.name: c for c in judge.checks_for(PACED, observed, 2, [])}
        assert judge.verdict(list(checks.values())).status == verdict
        assert checks["each kill in an announced step"].detail == f"predicted_steps={steps} seen={seen}"
    # The time moves with the steps: the unmoved kills at 7 s come before 9 s less a second; the moved ones at 10 and
    # 11 s are late neither way (the slack is 5 s).
    unmoved.starts = {"hog-1": SWAP_START}
    on_time = {c.name: c for c in judge.checks_for(PACED, unmoved, 2, [])}["each kill on time"]
    assert (on_time.status, on_time.detail) == ("failed", "predicted=9..13s seen=7,7")
    assert judge.checks_for(PACED, moved, 2, [])[0].detail == "oom_kills=2"
    moved.starts = {"hog-1": SWAP_START}
    assert judge.checks_for(PACED, moved, 2, [])[0].detail == "oom_kills=2 swap_mib=64"


def test_pods_on_nodes_with_different_swap_are_judged_apart() -> None:
    observed = killed_in("hog-1", (11, 10), (12, 11))
    other = killed_in("hog-2", (8, 7), (7, 6))
    observed.deaths |= other.deaths
    observed.back_offs |= other.back_offs
    observed.pods_seen |= other.pods_seen
    observed.starts = {"hog-1": SWAP_START, "hog-2": SINGLE_HOG_START}
    checks = judge.checks_for(PACED, observed, 2, [])
    assert [(c.name, c.status, c.detail) for c in checks] == [
        ("pods hog-1", "passed", "swap_mib=64"),
        ("pods hog-2", "passed", "swap_mib=0"),
    ]
    assert judge.evidence_complete(PACED, 2, observed)
    assert judge.swap_read(PACED, observed) == "0,64"
    assert judge.pod_predictions(PACED, observed) == {
        "hog-1": PACED.read_from(SWAP_START),
        "hog-2": PACED.read_from(SINGLE_HOG_START),
    }
    # Each held to the other's line: neither is as predicted, and each says why.
    observed.starts = {"hog-1": SINGLE_HOG_START, "hog-2": SWAP_START}
    checks = judge.checks_for(PACED, observed, 2, [])
    assert [(c.name, c.status) for c in checks] == [("pods hog-1", "failed"), ("pods hog-2", "failed")]
    assert checks[1].detail == (
        "swap_mib=64; each kill in an announced step (predicted_steps=10..13 seen=8(early),7(early)); "
        "each kill on time (predicted=9..13s seen=7,6)"
    )
    # A third pod whose line was not read: judged apart, by the settings alone (the pods' order is their names').
    observed.pods_seen.add("hog-0")
    assert [c.detail.partition(";")[0] for c in judge.checks_for(PACED, observed, 2, [])] == [
        "swap_mib=unread",
        "swap_mib=0",
        "swap_mib=64",
    ]
    assert judge.swap_read(PACED, observed) == "0,64"
    # Where every line read says the same, a pod not read is judged with them, and no swap read says none.
    observed.starts = {"hog-1": SWAP_START, "hog-2": SWAP_START}
    assert [p.swap_mib for p, _ in judge.resolved(PACED, observed)] == [64]
    observed.starts = {"hog-1": SINGLE_HOG_START}
    assert judge.swap_read(PACED, observed) is None
    assert judge.swap_read(PACED, verify.Observed()) is None


def test_supervised_pods_killed_whole_on_nodes_with_different_swap_are_judged_apart() -> None:
    paced = dataclasses.replace(PACED, supervised=True)
    observed = killed_in("hog-1", (11, 10), (12, 11))
    other = killed_in("hog-2", (8, 7), (7, 6))
    observed.deaths |= other.deaths
    observed.back_offs |= other.back_offs
    observed.pods_seen |= other.pods_seen
    observed.starts = {"hog-1": {**SWAP_START, "oom_group": "1"}, "hog-2": GROUP_WORKER_START}
    checks = judge.checks_for(paced, observed, 2, [])
    assert [(c.name, c.status, c.detail) for c in checks] == [
        ("pods hog-1", "passed", "supervised_end=group-kill swap_mib=64"),
        ("pods hog-2", "passed", "supervised_end=group-kill"),
    ]
    assert judge.swap_read(paced, observed) == "0,64"


def test_a_kill_after_a_step_waits_for_its_hogs_start_line_a_kill_at_start_does_not() -> None:
    observed = killed_in("hog-1", (11, 10))
    assert not judge.evidence_complete(PACED, 1, observed)  # the swap its line says would move the steps
    observed.starts = {"hog-1": {"event": "supervisor_start", "oom_group": "1"}}
    assert not judge.evidence_complete(PACED, 1, observed)  # a supervisor's line says no swap: its worker's does
    observed.starts = {"hog-1": SWAP_START}
    assert judge.evidence_complete(PACED, 1, observed)
    at_start = killed_in("hog-1", (11, 10))
    at_start.deaths["hog-1-0"].message = ""  # killed before its first step: its hog may not have said its start
    assert judge.evidence_complete(PACED, 1, at_start)
    # A kill other than the kernel's is not waited for either: it is not as predicted whatever the line says.
    other = killed_in("hog-1", (11, 10), (8, 7))
    other.deaths["hog-1-0"].message = ""
    other.deaths["hog-1-1"].reason = "Error"
    assert judge.evidence_complete(PACED, 1, other)


def test_the_verdict_line_says_the_swap_its_pods_were_judged_by_where_a_start_line_said_any() -> None:
    observed = killed_in("hog-1", (11, 10), (12, 11))
    observed.starts = {"hog-1": SWAP_START}
    tree = judge.verdict(judge.checks_for(PACED, observed, 2, []))
    line = report.verdict_line(tree, observed, [], 23.0, swap_mib=judge.swap_read(PACED, observed))
    fields = logfmt.parse(line)
    assert (fields["verdict"], fields["swap_mib"]) == ("as-predicted", "64")
    assert list(fields).index("swap_mib") == list(fields).index("seconds") - 1  # beside supervised_end, as read
    observed.starts = {"hog-1": SINGLE_HOG_START}
    assert "swap_mib" not in logfmt.parse(report.verdict_line(tree, observed, [], 23.0))
