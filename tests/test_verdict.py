"""The demo's judge (oomtools/verdict.py), item by item: what a run's own log and its end say against its settings,
as `make demo` writes it to the verdict line, --json and the report. make mutation (tests/mutation.py) found the
verdict line's tests let through a kill taken from an exit code alone, a hold that ended in an error, a kill's step
counted from a line that was no step, and the JSON's tree with its keys renamed."""

from __future__ import annotations

import pytest

from oomtools import verdict
from oomtools.verdict import Item, tree_json
from workload import kinds

START = {
    "event": "start",
    "predicted_steps_earliest": "7",
    "predicted_steps": "8",
    "predicted_steps_latest": "8",
    "interval_ms": "1000",
}


def steps(count: int) -> list[dict[str, str]]:
    return [{"event": "step", "step": str(n), "allocated_mib": str(16 * n)} for n in range(1, count + 1)]


def test_the_json_tree_keeps_each_items_name_status_detail_and_children() -> None:
    tree = Item("run", verdict.FAILED, "why", [Item("kill", verdict.PASSED, "step 8"), Item("empty", verdict.FAILED)])
    assert tree_json(tree) == {
        "name": "run",
        "status": "failed",
        "detail": "why",
        "children": [
            {"name": "kill", "status": "passed", "detail": "step 8"},
            {"name": "empty", "status": "failed", "detail": ""},
        ],
    }


@pytest.mark.parametrize(
    ("last_line", "step"),
    [
        ("event=step step=7 allocated_mib=112", 8),
        ("", 1),  # killed before its first step line
        ("event=holding step=7 allocated_mib=112", 1),  # not a step line: no step is read from it
        ("event=step step=seven", 1),
        ("event=step allocated_mib=112", 1),
    ],
)
def test_a_kill_comes_one_step_past_the_last_step_line(last_line: str, step: int) -> None:
    assert verdict.kill_step(last_line) == step


def test_the_start_line_announces_its_range_and_the_step_interval() -> None:
    announced = verdict.announced(START)
    assert announced is not None
    assert (announced.earliest, announced.expected, announced.latest, announced.interval_ms) == (7, 8, 8, 1000)
    without_interval = verdict.announced({key: value for key, value in START.items() if key != "interval_ms"})
    assert without_interval is not None
    assert without_interval.interval_ms == 0
    assert verdict.announced({"event": "start", "predicted_steps": "none"}) is None


def test_a_killed_run_as_predicted_in_full() -> None:
    judged = verdict.judge_run({}, [START, *steps(7)], True, 137)
    assert (judged.happened, judged.predicted, judged.by_kind) == (kinds.OOM_KILLED, kinds.OOM_KILLED, False)
    assert judged.fields == {
        "last_allocated_mib": 112,
        "killed_in_step": "8",
        "announced_steps": "7..8",
        "where": "2/2",  # the second of the two steps announced
    }
    assert tree_json(judged.item) == {
        "name": "oom-killer demo",
        "status": "passed",
        "detail": "",
        "children": [
            {
                "name": "the run ends as the settings predict",
                "status": "passed",
                "detail": "OOMKilled (predicted OOMKilled)",
            },
            {
                "name": "each kill in a step its hog announced",
                "status": "passed",
                "detail": "",
                "children": [{"name": "kill in step 8", "status": "passed", "detail": "2/2"}],
            },
        ],
    }


@pytest.mark.parametrize(
    ("oom_killed", "exit_code", "events", "happened"),
    [
        (False, 137, [START, *steps(7)], "ended-otherwise"),  # SIGKILLed, but not by the OOM killer
        (True, 1, [START, *steps(7)], "ended-otherwise"),  # the engine says OOM, the process ended on its own
        (False, 1, [START, *steps(3), {"event": "holding", "allocated_mib": "48"}], "ended-otherwise"),
        (False, 0, [START, *steps(3)], "ended-otherwise"),  # ended well, but never held
        (False, 0, [START, *steps(3), {"event": "holding", "allocated_mib": "48"}], kinds.HELD),
    ],
)
def test_a_run_is_killed_or_held_only_by_both_signs_of_it(
    oom_killed: bool, exit_code: int, events: list[dict[str, str]], happened: str
) -> None:
    judged = verdict.judge_run({"MEMORY_CEILING_MB": "48"}, events, oom_killed, exit_code)
    assert judged.happened == happened
    assert judged.predicted == kinds.HELD
    assert [child.name for child in judged.item.children] == ["the run ends as the settings predict"]
    assert judged.item.ok is (happened == kinds.HELD)


@pytest.mark.parametrize("ceiling", ["", "0"])
@pytest.mark.parametrize("variable", ["MEMORY_CEILING_MB", "MEMORY_CEILING_PCT"])
def test_no_ceiling_predicts_the_kill(variable: str, ceiling: str) -> None:
    assert verdict.judge_run({variable: ceiling}, [START], True, 137).predicted == kinds.OOM_KILLED


def test_a_ceiling_in_percent_predicts_the_hold_and_a_kill_under_it_is_no_pass() -> None:
    held = [START, *steps(3), {"event": "holding", "allocated_mib": "48"}]
    judged = verdict.judge_run({"MEMORY_CEILING_PCT": "90"}, held, False, 0)
    assert (judged.happened, judged.predicted, judged.item.ok) == (kinds.HELD, kinds.HELD, True)
    killed = verdict.judge_run({"MEMORY_CEILING_PCT": "90"}, [START, *steps(7)], True, 137)
    assert (killed.happened, killed.predicted, killed.item.ok) == (kinds.OOM_KILLED, kinds.HELD, False)


def test_each_restart_is_held_to_its_own_start_line() -> None:
    # A supervised worker's kills: each run's steps counted from its own start, none before any start.
    events = [
        {"event": "child_exit", "signal": "SIGKILL"},  # a worker killed before any start line
        START,
        *steps(7),
        {"event": "child_exit", "signal": "SIGKILL"},
        {"event": "child_exit", "signal": "SIGTERM"},  # ended otherwise: no kill
        START,
        *steps(2),
    ]
    kills = verdict.kills_against_announced(events, container_killed=True)
    assert [(kill.step, kill.where) for kill in kills] == [(1, verdict.BEFORE_START), (8, "2/2"), (3, "early")]
    # A worker killed again before its restart logged a start line announced nothing: it is before start, step 1.
    again = [
        START,
        *steps(7),
        {"event": "child_exit", "signal": "SIGKILL"},
        {"event": "child_exit", "signal": "SIGKILL"},
    ]
    kills = verdict.kills_against_announced(again, container_killed=False)
    assert [(kill.step, kill.where) for kill in kills] == [(8, "2/2"), (1, verdict.BEFORE_START)]


def test_a_page_cache_hog_that_held_reports_its_charge_and_missing_figures_as_none() -> None:
    env = {"MEMORY_KIND": "pagecache"}
    holding = {"event": "holding", "allocated_mib": "256"}
    judged = verdict.judge_run(env, [{"event": "start", "oom_group": "1"}, holding], False, 0)
    assert (judged.happened, judged.predicted, judged.by_kind) == (kinds.HELD, kinds.HELD, True)
    assert judged.fields == {
        "oom_group": "1",
        "files_written_mib": 256,
        "cgroup_usage_mib": "none",
        "limit_pct": "none",
        "working_set_mib": "none",
        "file_mib": "none",
    }
    assert [child.name for child in judged.item.children] == ["the run ends as the settings predict"]
    assert judged.item.name == "oom-killer demo"
    # A page cache hog that ended in an error held nothing.
    assert verdict.judge_run(env, [{"event": "start"}, holding], False, 1).happened == "ended-otherwise"
    assert verdict.judge_run(env, [{"event": "start"}, holding], False, 1).fields["oom_group"] == "none"


def test_a_supervised_workers_kill_counts_the_kills_and_the_kernels_count() -> None:
    env = {"PROCESS_MODEL": "supervised"}
    events = [
        {"event": "supervisor_start", "oom_group": "0"},
        START,
        *steps(7),
        {"event": "child_exit", "signal": "SIGKILL"},
        START,
        *steps(7),
        {"event": "child_exit", "signal": "SIGKILL", "oom_kill": "2"},
    ]
    judged = verdict.judge_run(env, events, False, 0)
    assert (judged.happened, judged.predicted) == (kinds.WORKER_KILLED, kinds.WORKER_KILLED)
    assert judged.fields["oom_group"] == "0"
    assert (judged.fields["worker_kills"], judged.fields["oom_kill_count"]) == (2, "2")
    assert judged.fields["killed_in_step"] == "8,8"  # the verdict line's fields, one entry per kill
    assert judged.fields["announced_steps"] == "7..8,7..8"
    assert judged.fields["where"] == "2/2,2/2"
    assert judged.fields["container_survived"] is True
    assert judged.item.ok
    events[-1] = {"event": "child_exit", "signal": "SIGKILL"}
    assert verdict.judge_run(env, events, False, 0).fields["oom_kill_count"] == "none"


def test_a_page_cache_hog_whose_supervised_worker_died_says_the_worker_was_killed() -> None:
    env = {"MEMORY_KIND": "pagecache", "PROCESS_MODEL": "supervised"}
    events = [{"event": "supervisor_start"}, START, {"event": "child_exit", "signal": "SIGTERM"}]
    judged = verdict.judge_run(env, events, False, 0)
    assert judged.happened.startswith(kinds.WORKER_KILLED)  # and, with no kill seen, outside any announced step
    assert not judged.item.ok
