"""When the kernel will act on the hog: pure arithmetic on the limit, the charge and the settings.

Both sides use it: the workload's start line, and the stack's `predictedSecondsToOomKill` export (infra/kube.py),
so it has no state and no side effects of its own.
"""

from __future__ import annotations

from workload.memory import MIB


def predict_kill(
    limit_bytes: int | None,
    charged_bytes: int,
    increment_mib: int,
    interval_ms: int,
    ceiling_mib: int | None,
    swap_bytes: int | None = None,
) -> tuple[int, float] | None:
    """(the step during which the kernel kills, seconds from the first step to it); None if no kill comes.

    The kill comes in the first step whose allocation takes the cgroup's charge past the limit; a ceiling
    at or below the room left means the hog stops growing first. Swap the cgroup may use moves that point out
    by as much: the kernel swaps the hog's pages out before it gives up (the pauses it adds are not counted).
    """
    if limit_bytes is None:
        return None
    room = limit_bytes + (swap_bytes or 0) - charged_bytes
    if ceiling_mib is not None and ceiling_mib * MIB <= room:
        return None
    step = max(room, 0) // (increment_mib * MIB) + 1
    return step, (step - 1) * interval_ms / 1000


def predict_throttle(
    high_bytes: int | None, charged_bytes: int, increment_mib: int, ceiling_mib: int | None
) -> int | None:
    """The first step whose allocation takes the charge past memory.high, where the kernel starts to reclaim
    and to make the hog sleep for it (with no swap, anonymous memory cannot be reclaimed: it slows, then dies);
    None where there is no memory.high or the ceiling comes first."""
    if high_bytes is None:
        return None
    room = high_bytes - charged_bytes
    if ceiling_mib is not None and ceiling_mib * MIB <= room:
        return None
    return max(room, 0) // (increment_mib * MIB) + 1
