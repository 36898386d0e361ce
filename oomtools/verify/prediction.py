"""What a deployed stack's settings predict: the bottom of verify's pipeline, read by each stage above it (observe,
detect, judge, report) and importing none of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from oomtools import alert_catalogue, verdict
from workload import kinds
from workload.memory import MIB
from workload.predict import KillRange, swap_steps
from workload.settings import DEFAULT_INCREMENT_MIB, DEFAULT_INTERVAL_MS, SettingsError, parse_settings

OOM_EXIT_CODE: Final = 137
# Kubernetes timestamps are whole seconds, and the container's start includes the interpreter's own (slower under
# a CPU limit than the prediction, which counts the steps only): a kill is on time from a second before the earliest
# prediction to the latest one plus half of it (at least 5 s).
EARLY_SLACK_SECONDS: Final = 1.0
LATE_SLACK_MIN_SECONDS: Final = 5.0

# How a supervised container's kill ends, by what its hog's start line (supervisor_start, or the worker's start) says
# of cgroup v2's memory.oom.group: 1, one OOM kills the worker and PID 1 together (the kubelet's default since 1.28),
# and the container dies OOMKilled and restarts as a single process's does; 0 (singleProcessOOMKill), or no such
# field (cgroup v1), the worker dies alone and the container lives on. Before a start line is read, not known.
GROUP_KILL: Final = "group-kill"
WORKER_KILL: Final = "worker-kill"
UNREAD: Final = "unread"
NO_OOM_GROUP: Final = "none"  # a start line without oom_group: cgroup v1 (or a kernel without memory.oom.group)


@dataclass(frozen=True)
class Prediction:
    kills: bool  # no ceiling and replicas > 0
    # PROCESS_MODEL=supervised: the kills are the worker's, and the container lives on unless its start line says
    # the kernel kills the group (supervised_end)
    supervised: bool
    earliest: float | None
    latest: float | None
    replicas: int
    steps: KillRange | None = None  # the steps in which a kill may come (predictedOomKillStep); None: not exported
    # MEMORY_KIND=tmpfs, one process: the emptyDir keeps a killed run's files, charged to the pod, so a restart
    # mostly dies at start (docs/memory-kinds.md; kinds.restarts_into_full_pod)
    restarts_into_full_pod: bool = False
    # The memory kind's charge outlives the process killed (tmpfs): where the kernel kills the whole group, no
    # supervisor is left to remove a killed worker's files, and the restart starts in a full pod.
    keeps_charge_after_death: bool = False
    # Supervised: memory.oom.group as the hog's start line gave it ("1", "0", NO_OOM_GROUP); None: none read yet.
    oom_group: str | None = None
    # The swap the hog's start line said its cgroup may use (swap_max_mib: 0 where it said none, or under a MiB);
    # None: no start line read. The steps and seconds above are moved by it (read_from).
    swap_mib: int | None = None
    # The container's MEMORY_INCREMENT_MB and INCREMENT_INTERVAL_MS: the steps swap moves the kill by, and their time.
    increment_mib: int = DEFAULT_INCREMENT_MIB
    interval_ms: int = DEFAULT_INTERVAL_MS

    @property
    def supervised_end(self) -> str | None:
        """A supervised container's predicted end (GROUP_KILL, WORKER_KILL, UNREAD before its start line is read);
        None for a single process."""
        if not self.supervised:
            return None
        if self.oom_group is None:
            return UNREAD
        return GROUP_KILL if self.oom_group == "1" else WORKER_KILL

    def read_from(self, start: Mapping[str, str] | None) -> Prediction:
        """The prediction for a container whose hog's start line is `start` (None: none read, the settings' own):
        swap the line says its cgroup may use moves the kill out (with_swap); a supervised one whose line says
        oom_group=1 is killed as a whole, as a single process is, and restarts into a full pod where its memory
        kind's charge outlives it."""
        if start is None:
            return self
        read = self.with_swap(swap_mib(start))
        if not self.supervised:
            return read
        oom_group = start.get("oom_group", NO_OOM_GROUP)
        full = self.restarts_into_full_pod or (oom_group == "1" and self.keeps_charge_after_death)
        return replace(read, oom_group=oom_group, restarts_into_full_pod=full)

    def with_swap(self, mib: int) -> Prediction:
        """The prediction where the cgroup may use `mib` MiB of swap (cgroup v2's memory.swap.max, as the kubelet's
        LimitedSwap gives a Burstable pod, or a v1 node's memory+swap limit): the kernel swaps the hog's pages out
        before it kills, so the kill comes later by the steps that swap holds (workload.predict.swap_steps), the
        earliest by the fewest and the latest by the most, and each step by the container's interval. A start line
        says whole MiB, rounded down: the most counts up to a MiB more. No swap, or no kill: as it was."""
        if mib <= 0 or not self.kills:
            return replace(self, swap_mib=mib)
        fewest = swap_steps(mib * MIB, self.increment_mib)[0]
        most = swap_steps((mib + 1) * MIB - 1, self.increment_mib)[1]
        steps = self.steps
        if steps is not None:
            steps = KillRange(steps.earliest + fewest, steps.expected + most, steps.latest + most, steps.interval_ms)
        step_seconds = self.interval_ms / 1000
        return replace(
            self,
            swap_mib=mib,
            steps=steps,
            earliest=None if self.earliest is None else self.earliest + fewest * step_seconds,
            latest=None if self.latest is None else self.latest + most * step_seconds,
        )

    def kill_step(self, last_line: str) -> int:
        """The step a container's kill came in, from its termination message (the hog's last step line)."""
        return verdict.kill_step(last_line)

    def in_announced_steps(self, last_line: str) -> bool:
        return self.steps is None or self.steps.holds(self.kill_step(last_line))

    def killed_at_start(self, last_line: str, first_run: bool = False) -> bool:
        return verdict.killed_at_start(self.restarts_into_full_pod, last_line, first_run)

    def on_time(self, seconds: float) -> bool:
        if self.earliest is None or self.latest is None:
            return False
        late = max(LATE_SLACK_MIN_SECONDS, self.latest / 2)
        return self.earliest - EARLY_SLACK_SECONDS <= seconds <= self.latest + late

    def alerts_expected(self) -> dict[str, bool]:
        """Which of the rule file's alerts the settings predict to fire for this namespace: a group kill ends the
        container, as a single process's kill does. Before a start line is read, a supervised stack's are the
        settings' own: the worker's kill, as cgroup v1 and memory.oom.group=0 give (judge.alerts_expected takes
        each pod's start line)."""
        return alert_catalogue.alerts_expected(self.kills, self.supervised and self.oom_group != "1")


def swap_mib(start: Mapping[str, str]) -> int:
    """The swap, in MiB, a hog's start line says its cgroup may use (swap_max_mib); 0 where it says none."""
    said = start.get("swap_max_mib", "")
    return int(said) if said.isascii() and said.isdigit() else 0


def predict(outputs: dict[str, Any], replicas: int, env: dict[str, str]) -> Prediction:
    """The prediction from the stack's outputs, the workload's replicas and its container's environment."""
    predicted = outputs.get("predictedSecondsToOomKill") or None
    kind, model = verdict.memory_kind(env), verdict.process_model(env)
    earliest = float(predicted["earliest"]) if predicted else None
    latest = float(predicted["latest"]) if predicted else None
    step = outputs.get("predictedOomKillStep") or None
    steps = None if not step else KillRange(int(step["earliest"]), int(step["latest"]), int(step["latest"]), 0)
    try:
        settings = parse_settings(env)
        pace = settings.increment_mib, settings.interval_ms
    except SettingsError:  # a container the hog refuses to start in: no start line, nothing for the pace to move
        pace = DEFAULT_INCREMENT_MIB, DEFAULT_INTERVAL_MS
    return Prediction(
        predicted is not None and replicas > 0,
        model.container_survives_kill,
        earliest,
        latest,
        replicas,
        steps,
        kinds.restarts_into_full_pod(kind, model),
        kind.keeps_charge_after_death,
        increment_mib=pace[0],
        interval_ms=pace[1],
    )
