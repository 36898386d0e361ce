"""When the kernel will act on the hog: pure arithmetic on the limit, the charge and the settings.

Both sides use it: the workload's start line, and the stack's `predictedSecondsToOomKill` export (infra/kube.py),
so it has no state and no side effects of its own.

The kill is announced as a range of steps, because part of what the cgroup is charged at the start is page cache
(the interpreter's own files, read once) that the kernel reclaims before it kills anything, and how much of it it
takes back depends on how the node's cache stands:
- earliest: the whole charge stays, and the kernel's own bookkeeping grows as the hog grows (GROWTH_* below);
- expected: what the kubelet calls the working set stays (the charge less the inactive file pages);
- latest: only what the kernel cannot take back stays (the charge less every reclaimable file page: anonymous
  memory, shmem and kernel memory remain).
Where the charge holds nothing reclaimable the three agree, unless the bookkeeping's growth straddles a step.
"""

from __future__ import annotations

from workload.memory import MIB

# What the cgroup is charged beyond the hog's own pages as it grows: page tables (8 bytes a 4 KiB page, 1/512 of
# what it allocates; measured on cgroup v1 here: 1 MiB more than allocated at 400 MiB, 2 MiB at 960 MiB), and on
# cgroup v2 up to 2 MiB more of the kernel's own (slab, per-cpu, socket buffers: measured in the v2 VM, where a
# 128 MiB limit met the kill a step before the whole charge predicted). Counted twice over for the earliest step.
GROWTH_BASE_BYTES = 2 * MIB
GROWTH_DIVISOR = 256  # the earliest counts 1/256 of the allocation; the others the page tables' 1/512 alone
PAGE_TABLE_DIVISOR = 512
# From the container's start to the hog's first step: the interpreter's start-up, slower on a cold node and under
# a CPU limit (measured here beside a busy core: 0.05 s, 0.15 s with the page cache dropped, 0.2-0.4 s under a
# 100-millicore quota either way). The stack's seconds count from the container's start, as Kubernetes' do.
STARTUP_SECONDS_MAX = 1.0
# Where the limit is the pod's (limitScope=pod), the pod's cgroup is charged for its sandbox too (the pause
# process: its pages, and the page cache of its binary where it read it first), which the hog's own cgroup does not
# show; the earliest step counts up to this much of it. Measured on make e2e's node (cgroup v1, its own pause built
# from Go): a sandbox's cgroup charged 0.9 to 1.0 MiB, 0.6 MiB of it resident; the tests charge a sandbox 3 MiB.
POD_SANDBOX_MAX_BYTES = 4 * MIB


class KillRange:
    """The steps in which the kernel may kill the hog (earliest <= expected <= latest), and the seconds from the
    hog's first step to each (the pauses between steps; the steps themselves take milliseconds)."""

    __slots__ = ("earliest", "expected", "latest", "interval_ms")

    def __init__(self, earliest: int, expected: int, latest: int, interval_ms: int) -> None:
        self.earliest = earliest
        self.expected = expected
        self.latest = latest
        self.interval_ms = interval_ms

    def seconds(self, step: int) -> float:
        return (step - 1) * self.interval_ms / 1000

    def holds(self, step: int) -> bool:
        """Whether a kill in this step is one the range announced."""
        return self.earliest <= step <= self.latest

    def where(self, step: int) -> str:
        """Where a kill step lies: "early" or "late" outside the range, else its place in it ("2/4")."""
        if step < self.earliest:
            return "early"
        if step > self.latest:
            return "late"
        return f"{step - self.earliest + 1}/{self.latest - self.earliest + 1}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KillRange) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.earliest, self.expected, self.latest, self.interval_ms

    def __repr__(self) -> str:
        return f"KillRange({self.earliest}..{self.latest}, expected {self.expected}, every {self.interval_ms} ms)"


def first_step_past(room: int, increment_bytes: int, divisor: int) -> int:
    """The first step whose allocation (plus 1/divisor of it, the kernel's growth with it) needs more than room."""
    if room < 0:
        return 1
    # s * increment * (divisor + 1) / divisor > room  <=>  s > room * divisor / (increment * (divisor + 1))
    return room * divisor // (increment_bytes * (divisor + 1)) + 1


def swap_steps(swap_bytes: int, increment_mib: int) -> tuple[int, int]:
    """How many steps swap of swap_bytes moves a kill out, (fewest, most), wherever the room stood without it.

    predict_kill adds the swap to the room, and for a room of 0 or more first_step_past(room + swap) less
    first_step_past(room) is the floor or the ceiling of swap * divisor / (increment * (divisor + 1)): the earliest
    step's divisor (GROWTH_DIVISOR) gives the fewest, the later steps' (PAGE_TABLE_DIVISOR) the most. What a range
    announced without the swap moves by where only the swap is known (verify: the stack's range, and the swap the
    hog's start line read on its node)."""
    increment = increment_mib * MIB
    fewest = first_step_past(swap_bytes, increment, GROWTH_DIVISOR) - 1
    most = -(-swap_bytes * PAGE_TABLE_DIVISOR // (increment * (PAGE_TABLE_DIVISOR + 1)))
    return fewest, most


def predict_kill(
    limit_bytes: int | None,
    charged_bytes: int,
    increment_mib: int,
    interval_ms: int,
    ceiling_mib: int | None,
    swap_bytes: int | None = None,
    reclaimable_bytes: int = 0,
    inactive_file_bytes: int | None = None,
    unseen_bytes: int = 0,
) -> KillRange | None:
    """The steps during which the kernel kills (see the module's docstring); None if no kill comes.

    charged_bytes is the cgroup's whole charge before the first step; reclaimable_bytes the part of it the kernel
    can take back (file pages less shmem); inactive_file_bytes the part a kubelet leaves out of the working set
    (default: all of the reclaimable). A ceiling that the expected step leaves room for means the hog stops
    growing first; one that does not caps the latest step at the step that reaches it. Swap the cgroup may use
    moves the kill out by as much: the kernel swaps the hog's pages out before it gives up. unseen_bytes is what
    the binding cgroup may be charged beyond charged_bytes, out of the hog's sight (a pod's sandbox): the earliest
    step counts it.
    """
    if limit_bytes is None:
        return None
    increment = increment_mib * MIB
    room = limit_bytes + (swap_bytes or 0) - charged_bytes
    reclaimable = min(max(reclaimable_bytes, 0), max(charged_bytes, 0))
    inactive = reclaimable if inactive_file_bytes is None else min(max(inactive_file_bytes, 0), reclaimable)
    expected_room = room + inactive
    if ceiling_mib is not None and ceiling_mib * MIB <= expected_room:
        return None
    earliest = first_step_past(room - unseen_bytes - GROWTH_BASE_BYTES, increment, GROWTH_DIVISOR)
    expected = first_step_past(expected_room, increment, PAGE_TABLE_DIVISOR)
    latest = first_step_past(room + reclaimable, increment, PAGE_TABLE_DIVISOR)
    if ceiling_mib is not None:
        latest = min(latest, -(-ceiling_mib // increment_mib))  # the step that reaches the ceiling
    earliest = min(earliest, latest)
    return KillRange(earliest, min(max(expected, earliest), latest), latest, interval_ms)


def binding_limit(cgroup_limit: int | None, pod_limit: int) -> tuple[int, str]:
    """The limit a container meets where the pod declares one (POD_MEMORY_LIMIT_MB), and where it was seen: the
    cgroup's where it shows one at or below the pod's ("cgroup": v1's hierarchical limit shows the pod's), else the
    pod's as declared ("downward_api": on v2 the container's cgroup namespace hides the pod's cgroup)."""
    if cgroup_limit is not None and cgroup_limit <= pod_limit:
        return cgroup_limit, "cgroup"
    return pod_limit, "downward_api"


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


def ceiling_from_pct(pct: int, limit_bytes: int, charged_bytes: int) -> int:
    """MEMORY_CEILING_PCT as the MiB the hog allocates: what `pct` percent of the limit leaves above what the
    container is charged before the first step (0 where the charge is there already), so that the container's charge
    holds at that percent. Whole MiB, rounded down: it holds at or just under the percent asked, never above."""
    return max(0, (limit_bytes * pct // 100 - charged_bytes) // MIB)


def asked_mib(pct: int, limit_bytes: int) -> float:
    """The charge MEMORY_CEILING_PCT asks for, in MiB."""
    return limit_bytes * pct / 100 / MIB
