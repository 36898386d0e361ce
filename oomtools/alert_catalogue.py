"""The alerts of alerts/oom-killer.rules.yaml, each named once: which kind of kill it is for, and when a stack's
settings expect it to fire. The rule generator, verify's judge and its detectors read the names from here; a test
holds them equal to the rule file's.

Stdlib only (no YAML, no Pulumi, no HTTP), so that anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

# The kinds of kill an alert is made for.
CONTAINER_KILL: Final = "container-kill"  # a single-process container OOM-killed: OOMKilled, exit code 137, a restart
CRASH_LOOP: Final = "crash-loop"  # the restarts of such kills back off: CrashLoopBackOff
WORKER_KILL: Final = "worker-kill"  # a supervised worker killed silently: the container lives on, no restart
KILL_KINDS: Final = (CONTAINER_KILL, CRASH_LOOP, WORKER_KILL)

RUNBOOKS: Final = PurePosixPath("docs/runbooks")  # from the project's root: docs/runbooks/<alert name>.md


@dataclass(frozen=True)
class Alert:
    name: str  # the rule's `alert:`
    kill: str  # one of KILL_KINDS

    @property
    def ends_container(self) -> bool:
        """Whether the kills it is for end the container (the kubelet reports them) rather than a worker inside it."""
        return self.kill != WORKER_KILL

    def expected(self, kills: bool, container_survives: bool) -> bool:
        """Whether it fires for a namespace whose settings predict kills (`kills`: no ceiling, replicas > 0) of the
        given kind (`container_survives`: a supervised worker's kill, the container lives on, as on cgroup v1 or
        with memory.oom.group=0): a single-process hog's kill ends its container, and so does a supervised one's
        where the kernel kills the whole group (memory.oom.group=1)."""
        return kills and container_survives != self.ends_container

    @property
    def runbook(self) -> PurePosixPath:
        """Its runbook, from the project's root."""
        return RUNBOOKS / f"{self.name}.md"


OOM_KILLED: Final = Alert("ContainerOOMKilled", CONTAINER_KILL)
CRASH_LOOPING: Final = Alert("ContainerCrashLooping", CRASH_LOOP)
OOM_KILL_WITHOUT_RESTART: Final = Alert("ContainerOOMKillWithoutRestart", WORKER_KILL)

ALERTS: Final = (OOM_KILLED, CRASH_LOOPING, OOM_KILL_WITHOUT_RESTART)  # the rule file's order
NAMES: Final = tuple(alert.name for alert in ALERTS)


def by_name(name: str) -> Alert:
    """The alert of that name; KeyError naming the known ones when there is none."""
    for alert in ALERTS:
        if alert.name == name:
            return alert
    raise KeyError(f"no alert {name} in alerts/oom-killer.rules.yaml (they are {', '.join(NAMES)})")


def alerts_expected(kills: bool, container_survives: bool) -> dict[str, bool]:
    """For each alert (in the rule file's order), whether the settings predict it fires (see Alert.expected)."""
    return {alert.name: alert.expected(kills, container_survives) for alert in ALERTS}
