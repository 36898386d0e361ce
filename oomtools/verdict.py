"""The judge `make demo` and `make verify` share: what a run's settings predict (from workload/kinds.py), where a kill
came against the steps its hog announced, and the result tree both write their verdict from.

A result is a tree of items, each with a status and details: a check, a kill, a node, a detector. A parent's status
is rolled up from its children's. The terminal's lines and the JUnit report are written from the same tree.

Stdlib and workload/ only: the demo imports it without verify's Kubernetes or Prometheus clients.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from workload import kinds, logfmt
from workload.predict import KillRange

PASSED: Final = "passed"
FAILED: Final = "failed"
# Judged over nothing (no kill that stepped, no node selected): never a pass, and never rolled up into one.
NOTHING_CHECKED: Final = "nothing-checked"
# Not part of this run (a node the settings do not select): counted neither for nor against the verdict.
SKIPPED: Final = "skipped"


@dataclass
class Item:
    """One result: a check, a kill, a node, a detector. `children` are what it was judged over. A `group` (the
    fleet: its nodes) is written as its children, and as itself only where it checked nothing."""

    name: str
    status: str
    detail: str = ""
    children: list[Item] = field(default_factory=list)
    group: bool = False

    @property
    def ok(self) -> bool:
        return self.status in (PASSED, SKIPPED)

    def cases(self) -> list[Item]:
        """What is written as a check (a JUnit test case, a `failed=` entry): the children, a group's in its place."""
        found: list[Item] = []
        for child in self.children:
            if not child.group:
                found.append(child)
                continue
            if child.status == NOTHING_CHECKED:
                found.append(child)
            found += child.cases()
        return found

    @property
    def failed(self) -> list[Item]:
        """The checks that did not pass (failed, or checked nothing)."""
        return [case for case in self.cases() if not case.ok]


def check(name: str, ok: bool, detail: str, children: Iterable[Item] = ()) -> Item:
    """A check that passed or failed, with what it was judged over."""
    return Item(name, PASSED if ok else FAILED, detail, list(children))


def over(name: str, children: Iterable[Item], detail: str, *, group: bool = False) -> Item:
    """A check made of the items it was judged over (a kill each, a node each): failed where any failed; nothing
    checked where there was nothing to judge (no item, or every one skipped); else passed. Never all([])."""
    items = list(children)
    return Item(name, _rolled(items), detail, items, group)


def rollup(name: str, children: Iterable[Item], detail: str = "") -> Item:
    """The verdict of a run: failed where any check failed; nothing checked where one checked nothing or none
    passed; else passed."""
    items = list(children)
    return Item(name, _rolled(items), detail, items)


def tree_json(item: Item) -> dict[str, object]:
    """An item and what it was judged over, as JSON's objects (a verdict written as JSON)."""
    found: dict[str, object] = {"name": item.name, "status": item.status, "detail": item.detail}
    if item.children:
        found["children"] = [tree_json(child) for child in item.children]
    return found


def write_junit(path: Path, tree: Item, seconds: float, suite: str) -> None:
    """The result tree as a JUnit suite: a test case per check (tree.cases()), failed where it did not pass (it
    failed, or checked nothing). `suite` names it (`oom-killer verify`); each case's class is that, dotted."""
    checks = tree.cases()
    element = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(checks)),
        failures=str(sum(not c.ok for c in checks)),
        time=f"{seconds:.1f}",
    )
    for case in checks:
        test = ET.SubElement(element, "testcase", classname=suite.replace(" ", "."), name=case.name)
        if not case.ok:
            ET.SubElement(test, "failure", message=case.detail).text = case.detail
        else:
            ET.SubElement(test, "system-out").text = case.detail
    ET.ElementTree(element).write(path, encoding="utf-8", xml_declaration=True)


def _rolled(items: list[Item]) -> str:
    if any(item.status == FAILED for item in items):
        return FAILED
    if any(item.status == NOTHING_CHECKED for item in items) or not any(item.status == PASSED for item in items):
        return NOTHING_CHECKED
    return PASSED


# ---------------------------------------------------------------------------------------------------------------
# What the settings predict


def memory_kind(env: dict[str, str]) -> kinds.MemoryKind:
    """MEMORY_KIND of a container's environment (the default where unset or unknown: an older stack's)."""
    return kinds.KINDS.get(env.get("MEMORY_KIND", ""), kinds.ANONYMOUS)


def process_model(env: dict[str, str]) -> kinds.ProcessModel:
    """PROCESS_MODEL of a container's environment (the default where unset or unknown)."""
    return kinds.MODELS.get(env.get("PROCESS_MODEL", ""), kinds.SINGLE)


# ---------------------------------------------------------------------------------------------------------------
# A kill against its hog's announced steps


def stepped(last_line: str) -> bool:
    """The hog's last line is a step: it got to its first step before the kill."""
    return last_line.startswith("event=step")


def kill_step(last_line: str) -> int:
    """The step a kill came in: one past the step the hog's last line (its termination message) names; 1 where it
    never logged a step."""
    logged = logfmt.parse(last_line).get("step", "0") if stepped(last_line) else "0"
    return int(logged) + 1 if logged.isdigit() else 1


def killed_at_start(restarts_into_full_pod: bool, last_line: str, first_run: bool) -> bool:
    """A restart in a pod a killed run's charge still fills (kinds.restarts_into_full_pod), killed before its first
    step line: as predicted for such a pod, and held to no step or time. Never the pod's first run: nothing filled
    its pod before it, so it is held to the steps and the time as any run (killed before a step, it came early)."""
    return restarts_into_full_pod and not first_run and not stepped(last_line)


def announced(start: dict[str, str]) -> KillRange | None:
    """The steps a hog's start line announces its kill in; None where it announces none (a ceiling, page cache)."""
    try:
        return KillRange(
            int(start["predicted_steps_earliest"]),
            int(start["predicted_steps"]),
            int(start["predicted_steps_latest"]),
            int(start.get("interval_ms", "0")),
        )
    except (KeyError, ValueError):
        return None


BEFORE_START: Final = "before-start"  # killed before its start line: it announced no step at all
UNANNOUNCED: Final = "unannounced"  # its start line announced no kill (a ceiling, page cache), and it was killed


@dataclass(frozen=True)
class HogKill:
    """One hog's kill: the step it came in (one past the last step it logged) and the range its start line
    announced (None: BEFORE_START or UNANNOUNCED, `where` says which)."""

    step: int
    announced: KillRange | None
    before_start: bool = False

    @property
    def where(self) -> str:
        if self.announced is None:
            return BEFORE_START if self.before_start else UNANNOUNCED
        return self.announced.where(self.step)

    @property
    def item(self) -> Item:
        return check(
            f"kill in step {self.step}", self.announced is not None and self.announced.holds(self.step), self.where
        )


def kills_against_announced(events: list[dict[str, str]], container_killed: bool) -> list[HogKill]:
    """Every hog's kill, with the range its own start line announced: a supervised worker's ends in a SIGKILL
    child_exit, the single hog's in the container's own OOM kill. A kill before any start line is one too."""
    found: list[HogKill] = []
    started = False
    steps_range: KillRange | None = None
    steps = 0
    for fields in events:
        event = fields.get("event")
        if event == "start":
            started, steps_range, steps = True, announced(fields), 0
        elif event == "step":
            steps += 1
        elif event == "child_exit":
            if fields.get("signal") == "SIGKILL":
                found.append(HogKill(steps + 1, steps_range, before_start=not started))
            started, steps_range, steps = False, None, 0
    if container_killed:
        found.append(HogKill(steps + 1, steps_range, before_start=not started))
    return found


def kill_fields(events: list[dict[str, str]], container_killed: bool) -> tuple[Item, dict[str, object]]:
    """(each kill against the steps its hog announced: an item over the kills, nothing checked where there was no
    kill; the verdict line's fields saying where in the range)."""
    kills = kills_against_announced(events, container_killed)
    fields: dict[str, object] = {}
    if kills:
        fields["killed_in_step"] = ",".join(str(kill.step) for kill in kills)
        fields["announced_steps"] = ",".join(
            f"{kill.announced.earliest}..{kill.announced.latest}" if kill.announced else "none" for kill in kills
        )
        fields["where"] = ",".join(kill.where for kill in kills)
    return over("each kill in a step its hog announced", (kill.item for kill in kills), ""), fields


# ---------------------------------------------------------------------------------------------------------------
# A run judged from its own log (the demo's: one container on an engine)


@dataclass(frozen=True)
class RunVerdict:
    happened: str  # kinds.OOM_KILLED, WORKER_KILLED, HELD, or what else ended it
    predicted: str
    fields: dict[str, object]  # what shows it, in the verdict line's order
    by_kind: bool  # judged by what its kind or model changes (page cache, supervised): the line names both
    item: Item  # the run's result: how it ended against the prediction, and where a kill came, each kill's step


def _killed(happened: str, kills: Item) -> str:
    """What happened, saying where a kill that is not as predicted came: before the hog's start line (it announced
    nothing), or outside the steps it announced."""
    if happened not in (kinds.WORKER_KILLED, kinds.OOM_KILLED) or kills.ok:
        return happened
    if kills.children and all(kill.detail == BEFORE_START for kill in kills.children):
        return f"{happened}-{BEFORE_START}"
    return f"{happened}-outside-announced-steps"


def _run_item(happened: str, predicted: str, kills: Item) -> Item:
    ends = check("the run ends as the settings predict", happened == predicted, f"{happened} (predicted {predicted})")
    killed = happened.startswith((kinds.WORKER_KILLED, kinds.OOM_KILLED))
    return rollup("oom-killer demo", [ends, kills] if killed else [ends])


def judge_run(env: dict[str, str], events: list[dict[str, str]], oom_killed: bool, exit_code: int) -> RunVerdict:
    """What happened to one run, from its log's events and how it ended, against what its settings predict."""
    kind, model = memory_kind(env), process_model(env)
    if not kind.killed or model.container_survives_kill:
        return _judge_by_kind(kind, model, events, exit_code)
    steps = [fields for fields in events if fields.get("event") == "step"]
    # A ceiling holds it below the limit (the settings leave room for the baseline); without one, the kernel kills.
    ceiling = any(env.get(name, "0") not in ("", "0") for name in ("MEMORY_CEILING_MB", "MEMORY_CEILING_PCT"))
    predicted = kinds.expected_end(kind, model, holds=ceiling)
    kills, where = kill_fields(events, exit_code == 137)
    if oom_killed and exit_code == 137:
        # As predicted only in a step the hog announced at its start (its own charge, what the kernel may take back).
        happened = _killed(kinds.OOM_KILLED, kills)
    elif any(fields.get("event") == "holding" for fields in events) and exit_code == 0:
        happened = kinds.HELD  # held at the ceiling until the demo stopped it
    else:
        happened = "ended-otherwise"
    fields: dict[str, object] = {"last_allocated_mib": int(steps[-1]["allocated_mib"] if steps else "0"), **where}
    return RunVerdict(happened, predicted, fields, False, _run_item(happened, predicted, kills))


def _judge_by_kind(
    kind: kinds.MemoryKind, model: kinds.ProcessModel, events: list[dict[str, str]], exit_code: int
) -> RunVerdict:
    """Page cache, or a supervised worker: (what happened, what the settings predict, the fields that show it)."""
    starts = [e for e in events if e["event"] in ("start", "supervisor_start")]
    oom_group = next((e["oom_group"] for e in starts if "oom_group" in e), "none")
    # Page cache is reclaimed, never killed; a supervised worker is killed alone unless the kernel kills the group.
    predicted = kinds.expected_end(kind, model, holds=False, oom_group=oom_group == "1")
    holding = [e for e in events if e["event"] == "holding"]
    child_exits = [e for e in events if e["event"] == "child_exit"]
    fields: dict[str, object] = {"oom_group": oom_group}
    if exit_code == 137:
        happened = kinds.OOM_KILLED
    elif not kind.killed and holding and exit_code == 0:
        happened = kinds.HELD
        fields.update(
            # Written: the files on disk, in the page cache as they were written. Charged: what the cgroup counts
            # against its limit (the kernel reclaimed the rest of the cache); the working set, what the kubelet sees.
            files_written_mib=int(holding[-1]["allocated_mib"]),
            cgroup_usage_mib=holding[-1].get("cgroup_usage_mib", "none"),
            limit_pct=holding[-1].get("limit_pct", "none"),
            working_set_mib=holding[-1].get("working_set_mib", "none"),
            file_mib=holding[-1].get("file_mib", "none"),
        )
    elif any(e.get("signal") == "SIGKILL" for e in child_exits) and exit_code == 0:
        happened = kinds.WORKER_KILLED  # a worker that exited otherwise (its own error, say) was not killed
        fields.update(
            worker_kills=sum(e.get("signal") == "SIGKILL" for e in child_exits),
            oom_kill_count=child_exits[-1].get("oom_kill", "none"),
            container_survived=True,
        )
    else:
        happened = "ended-otherwise"
    if model.container_survives_kill and not kind.killed and child_exits:
        happened = kinds.WORKER_KILLED  # page cache should never have killed it: say what did happen
    kills, where = kill_fields(events, exit_code == 137)
    fields.update(where)
    happened = _killed(happened, kills)
    return RunVerdict(happened, predicted, fields, True, _run_item(happened, predicted, kills))
