"""The judge `make demo` and `make verify` share: what a run's settings predict (from workload/kinds.py), where a kill
came against the steps its hog announced, and the result tree both write their verdict from.

A result is a tree of items, each with a status and details: a check, a kill, a node, a detector. A parent's status
is rolled up from its children's. The terminal's lines and the JUnit report are written from the same tree.

Stdlib and workload/ only: the demo imports it without verify's Kubernetes or Prometheus clients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from workload import kinds, logfmt
from workload.predict import KillRange

PASSED: Final = "passed"
FAILED: Final = "failed"
# Not part of this run (a node the settings do not select): counted neither for nor against the verdict.
SKIPPED: Final = "skipped"


@dataclass
class Item:
    """One result: a check, a kill, a node, a detector. `children` are what it was judged over."""

    name: str
    status: str
    detail: str = ""
    children: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (PASSED, SKIPPED)

    @property
    def failed(self) -> list[Item]:
        """The children that did not pass."""
        return [child for child in self.children if not child.ok]


def check(name: str, ok: bool, detail: str, children: Iterable[Item] = ()) -> Item:
    """A check that passed or failed, with what it was judged over."""
    return Item(name, PASSED if ok else FAILED, detail, list(children))


def rollup(name: str, children: Iterable[Item], detail: str = "") -> Item:
    """An item whose status is its children's: failed where any failed, else passed."""
    items = list(children)
    return Item(name, PASSED if all(item.ok for item in items) else FAILED, detail, items)


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


def killed_at_start(restarts_into_full_pod: bool, last_line: str) -> bool:
    """A restart in a pod a killed run's charge still fills (kinds.restarts_into_full_pod), killed before its first
    step line: as predicted for such a pod, and held to no step or time."""
    return restarts_into_full_pod and not stepped(last_line)


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


def kills_against_announced(events: list[dict[str, str]], container_killed: bool) -> list[tuple[int, KillRange]]:
    """Each hog's kill step (one past the last step it logged) with the range its own start line announced: a
    supervised worker's ends in a SIGKILL child_exit, the single hog's in the container's own OOM kill."""
    found: list[tuple[int, KillRange]] = []
    steps_range: KillRange | None = None
    steps = 0
    for fields in events:
        event = fields.get("event")
        if event == "start":
            steps_range, steps = announced(fields), 0
        elif event == "step":
            steps += 1
        elif event == "child_exit":
            if fields.get("signal") == "SIGKILL" and steps_range is not None:
                found.append((steps + 1, steps_range))
            steps_range = None
    if container_killed and steps_range is not None:
        found.append((steps + 1, steps_range))
    return found


def kill_fields(events: list[dict[str, str]], container_killed: bool) -> tuple[bool, dict[str, object]]:
    """(every kill came in a step its hog announced, the verdict line's fields saying where in the range)."""
    kills = kills_against_announced(events, container_killed)
    fields: dict[str, object] = {}
    if kills:
        fields["killed_in_step"] = ",".join(str(step) for step, _ in kills)
        fields["announced_steps"] = ",".join(f"{r.earliest}..{r.latest}" for _, r in kills)
        fields["where"] = ",".join(r.where(step) for step, r in kills)
    return all(r.holds(step) for step, r in kills), fields


# ---------------------------------------------------------------------------------------------------------------
# A run judged from its own log (the demo's: one container on an engine)


@dataclass(frozen=True)
class RunVerdict:
    happened: str  # kinds.OOM_KILLED, WORKER_KILLED, HELD, or what else ended it
    predicted: str
    fields: dict[str, object]  # what shows it, in the verdict line's order
    by_kind: bool  # judged by what its kind or model changes (page cache, supervised): the line names both

    @property
    def item(self) -> Item:
        return check("the run ends as the settings predict", self.happened == self.predicted, self.happened)


def judge_run(env: dict[str, str], events: list[dict[str, str]], oom_killed: bool, exit_code: int) -> RunVerdict:
    """What happened to one run, from its log's events and how it ended, against what its settings predict."""
    kind, model = memory_kind(env), process_model(env)
    if not kind.killed or model.container_survives_kill:
        return _judge_by_kind(kind, model, events, exit_code)
    steps = [fields for fields in events if fields.get("event") == "step"]
    # A ceiling holds it below the limit (the settings leave room for the baseline); without one, the kernel kills.
    predicted = kinds.expected_end(kind, model, holds=env.get("MEMORY_CEILING_MB", "0") not in ("", "0"))
    on_time, where = kill_fields(events, exit_code == 137)
    if oom_killed and exit_code == 137:
        # As predicted only in a step the hog announced at its start (its own charge, what the kernel may take back).
        happened = kinds.OOM_KILLED if on_time else f"{kinds.OOM_KILLED}-outside-announced-steps"
    elif any(fields.get("event") == "holding" for fields in events) and exit_code == 0:
        happened = kinds.HELD  # held at the ceiling until the demo stopped it
    else:
        happened = "ended-otherwise"
    fields: dict[str, object] = {"last_allocated_mib": int(steps[-1]["allocated_mib"] if steps else "0"), **where}
    return RunVerdict(happened, predicted, fields, by_kind=False)


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
    on_time, where = kill_fields(events, exit_code == 137)
    fields.update(where)
    if happened in (kinds.WORKER_KILLED, kinds.OOM_KILLED) and not on_time:
        happened += "-outside-announced-steps"
    return RunVerdict(happened, predicted, fields, by_kind=True)
