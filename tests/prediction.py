"""What every kill test holds the kernel to: the range of steps the hog itself announced at its start.

The start line says in which steps the kill may come (predicted_steps_earliest..predicted_steps_latest) and how
much of its charge at start the kernel could take back (reclaimable_mib). A test checks the kill against that
range, and the range against the arithmetic's own bound: no wider than the reclaimable charge and the kernel's
growth allow, one or two steps where nothing is reclaimable. It never checks a lucky single step.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import PROJECT
from workload.memory import MIB
from workload.predict import GROWTH_BASE_BYTES, GROWTH_DIVISOR, POD_SANDBOX_MAX_BYTES


def announced(start: dict[str, str]) -> tuple[int, int, int]:
    """(earliest, expected, latest) from a start line."""
    return (
        int(start["predicted_steps_earliest"]),
        int(start["predicted_steps"]),
        int(start["predicted_steps_latest"]),
    )


def widest(start: dict[str, str], latest: int) -> int:
    """How far apart its ends may be for this start: the reclaimable charge (rounded up) and the kernel's growth,
    over the increment, plus the step a boundary can split; under a pod's limit, the sandbox's charge it cannot see."""
    increment = int(start["increment_mib"]) * MIB
    reclaimable = (int(start["reclaimable_mib"]) + 1) * MIB
    sandbox = POD_SANDBOX_MAX_BYTES if start.get("limit_scope") == "pod" else 0
    return (reclaimable + sandbox + GROWTH_BASE_BYTES + latest * increment // GROWTH_DIVISOR) // increment + 1


def assert_killed_in_announced_range(start: dict[str, str], steps_logged: int) -> int:
    """The kill came in a step the start line announced (one past the last step the hog lived to log), and the
    range is no wider than its own charge allows. Returns the kill step."""
    earliest, expected, latest = announced(start)
    killed_in = steps_logged + 1
    assert earliest <= expected <= latest, start
    assert earliest <= killed_in <= latest, f"killed in step {killed_in}, announced {earliest}..{latest}: {start}"
    assert latest - earliest <= widest(start, latest), start
    return killed_in


def assert_one_step_where_nothing_is_reclaimable(start: dict[str, str]) -> None:
    """Nothing in the start charge for the kernel to take back: the range is the step the kernel's own growth
    allows, one, or two where that growth straddles a step boundary."""
    earliest, _, latest = announced(start)
    assert int(start["reclaimable_mib"]) <= 1, start
    assert latest - earliest <= 1, start


def drop_page_cache() -> None:
    """A node's first run: nothing of the interpreter's files in the page cache, so the hog's cgroup reads them
    itself and is charged for them (the part of its start charge the kernel can take back)."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def warm_page_cache() -> None:
    """A node that ran it before: the interpreter's and the workload's files read by this process's cgroup, so
    the hog's own cgroup is charged for none of them."""
    subprocess.run(
        [sys.executable, "-S", "-c", "import mmap, signal, workload.main, workload.supervise"],
        cwd=PROJECT,
        check=True,
    )
