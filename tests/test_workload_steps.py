"""The pure pieces of the hog's loop: the plan it announces, the size of each step, its log lines."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workload import logfmt
from workload.cgroup import MemoryCgroup
from workload.main import Counters, next_step_mib, step_line, write_termination_message
from workload.memory import MIB, allocate, rss_bytes
from workload.predict import (
    GROWTH_BASE_BYTES,
    GROWTH_DIVISOR,
    POD_SANDBOX_MAX_BYTES,
    KillRange,
    asked_mib,
    ceiling_from_pct,
    predict_kill,
    predict_throttle,
    swap_steps,
)
from workload.settings import Settings


def test_predicted_kill_is_the_first_step_past_the_room_left() -> None:
    # 128 MiB limit, 8 MiB already charged and none of it reclaimable: 120 MiB of room, so 12 steps of 10 and their
    # page tables do not fit: the 12th is killed, after 11 pauses of 0.5 s. The kernel's own growth (2 MiB) cannot
    # move that, so the range is one step.
    kill = predict_kill(128 * MIB, 8 * MIB, 10, 500, None)
    assert kill == KillRange(12, 12, 12, 500)
    assert kill is not None
    assert kill.seconds(kill.expected) == 5.5
    # 6 MiB charged: 122 MiB of room, 12 steps fit with their page tables; the 2 MiB the kernel may add can
    # still take the 12th past the limit: 12..13, 13 expected.
    assert predict_kill(128 * MIB, 6 * MIB, 10, 500, None) == KillRange(12, 13, 13, 500)


def test_reclaimable_page_cache_at_start_widens_the_range_to_the_later_steps() -> None:
    # A first run on a cold node (issue 15): 100 MiB limit, 6 MiB steps, 25 MiB charged of which 16 MiB is page
    # cache the kernel takes back: from step 13 (all of it stays) to 16 (none of it does); killed in 15 there.
    cold = predict_kill(100 * MIB, 25 * MIB, 6, 0, None, reclaimable_bytes=16 * MIB)
    assert cold is not None
    assert (cold.earliest, cold.latest) == (13, 16)
    assert cold.where(15) == "3/4"
    assert (cold.where(12), cold.where(17)) == ("early", "late")
    # The working set (the charge less the inactive file pages) gives the expected step.
    assert predict_kill(100 * MIB, 25 * MIB, 6, 0, None, 0, 16 * MIB, 4 * MIB) == KillRange(13, 14, 16, 0)
    # The same node warm: 9 MiB charged, nothing reclaimable: killed in 16 there.
    assert predict_kill(100 * MIB, 9 * MIB, 6, 0, None) == KillRange(15, 16, 16, 0)


@given(
    limit_mib=st.integers(min_value=17, max_value=4096),
    charged_kib=st.integers(min_value=0, max_value=64 * 1024),
    reclaimable_kib=st.integers(min_value=0, max_value=64 * 1024),
    increment_mib=st.integers(min_value=1, max_value=512),
    stays=st.floats(min_value=0, max_value=1),
    kernel_kib=st.integers(min_value=0, max_value=2 * 1024),
)
def test_the_kill_falls_in_the_announced_range_whatever_the_kernel_takes_back(
    limit_mib: int, charged_kib: int, reclaimable_kib: int, increment_mib: int, stays: float, kernel_kib: int
) -> None:
    """Simulated: any part of the reclaimable charge stays, the page tables grow with the hog, and the kernel's
    own bookkeeping grows by up to 2 MiB; the first step past the limit is inside [earliest, latest]."""
    reclaimable_kib = min(reclaimable_kib, charged_kib)
    kill = predict_kill(
        limit_mib * MIB, charged_kib * 1024, increment_mib, 0, None, reclaimable_bytes=reclaimable_kib * 1024
    )
    assert kill is not None
    assert kill.earliest <= kill.expected <= kill.latest
    fixed = (charged_kib - reclaimable_kib + stays * reclaimable_kib) * 1024
    step = 0
    while True:
        step += 1
        allocated = step * increment_mib * MIB
        if fixed + allocated + allocated / 512 + kernel_kib * 1024 * min(1, step / 2) > limit_mib * MIB:
            break
    assert kill.earliest <= step <= kill.latest, (kill, step)
    # No wider than the reclaimable charge and the kernel's growth allow.
    spread = reclaimable_kib * 1024 + GROWTH_BASE_BYTES + allocated / GROWTH_DIVISOR
    assert kill.latest - kill.earliest <= spread // (increment_mib * MIB) + 1
    if reclaimable_kib == 0 and increment_mib * MIB > GROWTH_BASE_BYTES + allocated / GROWTH_DIVISOR:
        # Nothing to take back and steps bigger than the kernel's growth: one step, or two where the growth
        # straddles a boundary.
        assert kill.latest - kill.earliest <= 1


def test_steps_stop_exactly_at_the_ceiling() -> None:
    settings = Settings(increment_mib=30, ceiling_mib=70)
    sizes = []
    allocated = 0
    while size := next_step_mib(settings, allocated):
        sizes.append(size)
        allocated += size
    assert sizes == [30, 30, 10]
    assert next_step_mib(Settings(increment_mib=30), 10**6) == 30


def test_logfmt_quotes_only_what_needs_it() -> None:
    assert logfmt.line(event="step", step=3, pct=41.26, limit=None, ok=True) == (
        "event=step step=3 pct=41.3 limit=none ok=true"
    )
    assert logfmt.line(reason='say "hi" = bye', empty="") == 'reason="say \\"hi\\" = bye" empty=""'


def test_allocation_makes_every_page_resident() -> None:
    before = rss_bytes()
    block = allocate(64 * MIB)
    grown = rss_bytes() - before
    assert grown >= 64 * MIB
    block.close()


def test_termination_message_overwrites_an_existing_file_and_never_creates_one(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    message.write_text("old and longer line\n")
    assert write_termination_message(str(message), "step=2")
    assert message.read_text() == "step=2\n"
    missing = tmp_path / "missing"
    assert not write_termination_message(str(missing), "step=1")
    assert not missing.exists()


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
        st.one_of(st.text(max_size=20), st.integers(), st.sampled_from([True, False, None])),
        max_size=6,
    )
)
def test_logfmt_lines_parse_back_to_their_fields(fields: dict[str, object]) -> None:
    expected = {
        key: logfmt._value(value).strip('"') if not isinstance(value, str) else value for key, value in fields.items()
    }
    assert logfmt.parse(logfmt.line(**fields)) == expected


def test_swap_the_cgroup_may_use_moves_the_kill_out_by_as_much() -> None:
    # 128 MiB limit and 64 MiB of swap, 8 MiB charged: 184 MiB of room, so 18 steps of 10 fit, with room to spare
    # for the kernel's own growth, and the 19th is killed.
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, None, 64 * MIB) == KillRange(19, 19, 19, 500)
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, None, None) == KillRange(12, 12, 12, 500)


def test_swap_moves_a_kill_by_the_steps_it_holds_fewest_at_the_earliest_most_at_the_latest() -> None:
    # 64 MiB in 10 MiB steps: 6.375 steps with the earliest step's growth counted (1/256), 6.39 with the page
    # tables' alone (1/512): at least 6, at most 7.
    assert swap_steps(64 * MIB, 10) == (6, 7)
    assert swap_steps(0, 10) == (0, 0)
    assert swap_steps(MIB, 1) == (0, 1)  # a step's worth, less its growth: moves the earliest by 0 or 1
    assert swap_steps(257 * MIB, 1) == (256, 257)
    assert swap_steps(513 * MIB, 16) == (31, 32)  # 31.94 rounded down, and exactly 32 (no step more)


SWAP_GRID = {
    "limit_mib": (32, 64, 100, 128, 256, 1000),
    "charged": (3 * MIB, 9 * MIB + 123 * 1024, 16 * MIB, 32 * MIB + 1),
    "increment_mib": (1, 3, 10, 16, 64),
    "swap": (1, 4096, MIB - 1, 7 * MIB + 12345, 64 * MIB, 100 * MIB, 512 * MIB + 3),
}


def test_a_range_announced_without_swap_moved_by_swap_steps_holds_the_kill_with_it_and_no_wider_than_a_step() -> None:
    """Over a grid of limits, charges (all of it staying, or all but 3 MiB taken back), increments, a pod's
    sandbox or none, and swaps: the range predict_kill gives with the swap lies inside the one it gives without,
    its earliest moved by the fewest steps and its latest by the most (verify knows only the stack's range and the
    swap); and each end is met exactly somewhere, and missed by at most one step anywhere."""
    fewest_met = most_met = fewest_missed = most_missed = 0
    for limit_mib, charged, increment_mib, swap in itertools.product(*SWAP_GRID.values()):
        for reclaimable, unseen in itertools.product((0, charged - 3 * MIB), (0, POD_SANDBOX_MAX_BYTES)):
            if limit_mib * MIB - charged - unseen - GROWTH_BASE_BYTES < 0:
                continue  # no room at all: a stack's settings refuse such a limit
            plain = predict_kill(limit_mib * MIB, charged, increment_mib, 1000, None, None, reclaimable, None, unseen)
            moved = predict_kill(limit_mib * MIB, charged, increment_mib, 1000, None, swap, reclaimable, None, unseen)
            assert plain is not None
            assert moved is not None
            fewest, most = swap_steps(swap, increment_mib)
            case = (limit_mib, charged, increment_mib, swap, reclaimable, unseen, plain, moved)
            assert plain.earliest + fewest <= moved.earliest <= plain.earliest + fewest + 1, case
            assert plain.latest + most - 1 <= moved.latest <= plain.latest + most, case
            fewest_met += moved.earliest == plain.earliest + fewest
            fewest_missed += moved.earliest == plain.earliest + fewest + 1
            most_met += moved.latest == plain.latest + most
            most_missed += moved.latest == plain.latest + most - 1
    assert min(fewest_met, most_met, fewest_missed, most_missed) > 0


def test_throttling_is_predicted_from_the_first_step_past_memory_high() -> None:
    assert predict_throttle(96 * MIB, 8 * MIB, 10, None) == 9
    assert predict_throttle(None, 8 * MIB, 10, None) is None
    assert predict_throttle(96 * MIB, 8 * MIB, 10, 88) is None  # the ceiling comes first
    assert predict_throttle(96 * MIB, 8 * MIB, 10, 89) == 9


def v2_cgroup(tmp_path: Path, high_events: int, high: int | None = 96 * MIB) -> MemoryCgroup:
    (tmp_path / "memory.current").write_text(f"{100 * MIB}\n")
    (tmp_path / "memory.stat").write_text(
        f"anon {90 * MIB}\nfile {6 * MIB}\nshmem {2 * MIB}\ninactive_file {4 * MIB}\nactive_file {2 * MIB}\n"
    )
    (tmp_path / "memory.events").write_text(f"low 0\nhigh {high_events}\nmax 3\noom 0\noom_kill 0\n")
    (tmp_path / "memory.pressure").write_text(
        "some avg10=12.50 avg60=1.00 avg300=0.00 total=10\nfull avg10=7.25 avg60=1.00 avg300=0.00 total=5\n"
    )
    path = str(tmp_path)
    return MemoryCgroup(2, path, 128 * MIB, path, high, path if high else None, 1, None)


def test_a_v2_step_line_carries_the_kernels_accounting_and_says_when_it_was_throttled(tmp_path: Path) -> None:
    cgroup = v2_cgroup(tmp_path, high_events=5)
    counters = Counters(cgroup)  # 5 high events and 3 max events before the first step
    (tmp_path / "memory.events").write_text("low 0\nhigh 9\nmax 3\noom 0\noom_kill 0\n")
    fields = logfmt.parse(step_line(4, 80, 90 * MIB, cgroup, counters, 1.5))
    assert fields == {
        "event": "step",
        "step": "4",
        "allocated_mib": "80",
        "rss_mib": "90",
        "cgroup_usage_mib": "100",
        "limit_pct": "78.1",
        "working_set_mib": "96",
        "anon_mib": "90",
        "file_mib": "6",
        "shmem_mib": "2",
        "high_events": "4",
        "max_events": "0",
        "pressure_some_avg10": "12.5",
        "pressure_full_avg10": "7.2",
        "throttled": "true",
        "step_ms": "1500",
    }
    # The next step with no new high events was not throttled, though the count since start stays.
    fields = logfmt.parse(step_line(5, 90, 100 * MIB, cgroup, counters, 0.01))
    assert (fields["throttled"], fields["high_events"], "step_ms" in fields) == ("false", "4", False)


def test_no_throttled_field_without_a_memory_high(tmp_path: Path) -> None:
    cgroup = v2_cgroup(tmp_path, high_events=0, high=None)
    fields = logfmt.parse(step_line(1, 10, 20 * MIB, cgroup, Counters(cgroup), 0.01))
    assert "throttled" not in fields
    assert fields["high_events"] == "0"


def test_two_ranges_are_equal_only_field_for_field() -> None:
    # Every assertion above compares a prediction with ==: a KillRange equal to any other would pass them all.
    announced = KillRange(7, 8, 8, 1000)
    assert announced == KillRange(7, 8, 8, 1000)
    assert hash(announced) == hash(KillRange(7, 8, 8, 1000))
    for other in (KillRange(6, 8, 8, 1000), KillRange(7, 7, 8, 1000), KillRange(7, 8, 9, 1000), KillRange(7, 8, 8, 0)):
        assert announced != other
    assert announced != (7, 8, 8, 1000)


# A 16 MiB step with its page tables (1/512 of it) takes exactly this many bytes: four fit in four of them.
STEP_WITH_PAGE_TABLES = 16 * MIB * 513 // 512


@pytest.mark.parametrize(
    ("limit", "charged", "more", "expected"),
    [
        (64 * MIB + 4 * STEP_WITH_PAGE_TABLES, 64 * MIB, {}, 5),  # four steps fit to the byte: the fifth is killed
        (64 * MIB + 4 * STEP_WITH_PAGE_TABLES - 1, 64 * MIB, {}, 4),  # one byte less: the fourth
        (64 * MIB + 4 * STEP_WITH_PAGE_TABLES - 1, 64 * MIB, {"reclaimable_bytes": 0}, 4),
        (4 * STEP_WITH_PAGE_TABLES - 1, 0, {"reclaimable_bytes": 5 * MIB}, 4),  # nothing charged, nothing to take back
        # what the kernel may take back but the working set keeps (no inactive file pages) moves only the latest
        (
            64 * MIB + 4 * STEP_WITH_PAGE_TABLES - 1,
            64 * MIB,
            {"reclaimable_bytes": 8 * MIB, "inactive_file_bytes": 0},
            4,
        ),
    ],
)
def test_the_expected_step_is_exact_to_the_byte_at_a_steps_edge(
    limit: int, charged: int, more: dict[str, int], expected: int
) -> None:
    kill = predict_kill(limit, charged, 16, 0, None, **more)
    assert kill is not None
    assert kill.expected == expected


def test_a_ceiling_the_expected_step_passes_caps_the_latest_at_the_step_that_reaches_it() -> None:
    # 88 MiB of room, 32 MiB of page cache the working set leaves out: expected in 6, latest 8 without a ceiling.
    args = (128 * MIB, 40 * MIB, 16, 0)
    cache = {"reclaimable_bytes": 32 * MIB, "inactive_file_bytes": 0}
    assert predict_kill(*args, None, **cache) == KillRange(6, 6, 8, 0)
    # A ceiling at 100 MiB is reached in step 7: the hog stops growing there, so no kill comes later than 7.
    assert predict_kill(*args, 100, **cache) == KillRange(6, 6, 7, 0)
    # A ceiling the room holds, to the MiB: it holds there, no kill.
    assert predict_kill(*args, 88, **cache) is None
    assert predict_kill(128 * MIB, 28 * MIB, 16, 0, 100) is None
    assert predict_kill(128 * MIB, 28 * MIB, 16, 0, 101) == KillRange(7, 7, 7, 0)


def test_a_ceiling_in_percent_is_what_the_percent_leaves_above_the_charge_to_the_mib_rounded_down() -> None:
    limit = 128 * MIB
    # 90% of 128 MiB is 115.2 MiB: above a 10 MiB charge, 105.2 MiB, so 105 whole MiB (an int: the start line's)
    assert ceiling_from_pct(90, limit, 10 * MIB) == 105
    assert type(ceiling_from_pct(90, limit, 10 * MIB)) is int
    assert asked_mib(90, limit) == pytest.approx(115.2)
    # one byte more charged and the MiB that no longer fits is not taken
    assert ceiling_from_pct(50, limit, 10 * MIB) == 54
    assert ceiling_from_pct(50, limit, 10 * MIB + 1) == 53
    # the percent of an odd limit, to the byte: 99% of 100 MiB + 1 byte
    assert ceiling_from_pct(99, 100 * MIB + 1, 0) == 99
    assert ceiling_from_pct(99, 100 * MIB + 100, 0) == 99
    # a charge already at or past the percent: nothing more (it holds at once), never a negative size
    assert ceiling_from_pct(10, limit, 12 * MIB + MIB // 2) == 0
    assert ceiling_from_pct(10, limit, 64 * MIB) == 0


@given(
    st.integers(min_value=1, max_value=99),
    st.integers(min_value=16 * MIB, max_value=1 << 40),
    st.integers(min_value=0, max_value=64 * MIB),
)
def test_a_ceiling_in_percent_never_takes_the_charge_past_the_percent_and_falls_short_by_under_a_mib(
    pct: int, limit: int, charged: int
) -> None:
    ceiling = ceiling_from_pct(pct, limit, charged)
    target = limit * pct / 100
    assert ceiling >= 0
    if ceiling:  # 0 where the charge is there already
        assert charged + ceiling * MIB <= target
    if charged + MIB <= target:
        assert charged + (ceiling + 1) * MIB > target
