"""The pure pieces of the hog's loop: the plan it announces, the size of each step, its log lines."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from workload import logfmt
from workload.cgroup import MemoryCgroup
from workload.main import Counters, next_step_mib, step_line, write_termination_message
from workload.memory import MIB, allocate, rss_bytes
from workload.predict import predict_kill, predict_throttle
from workload.settings import Settings


def test_predicted_kill_is_the_first_step_past_the_room_left() -> None:
    # 128 MiB limit, 8 MiB already charged: 120 MiB of room, so 12 steps of 10 fit and the 13th is killed,
    # after 12 pauses of 0.5 s.
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, None) == (13, 6.0)


def test_no_kill_is_predicted_without_a_limit_or_below_a_ceiling() -> None:
    assert predict_kill(None, 8 * MIB, 10, 500, None) is None
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, 100) is None
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, 121) == (13, 6.0)


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
    # 128 MiB limit and 64 MiB of swap, 8 MiB charged: 184 MiB of room, so the 19th step of 10 is killed.
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, None, 64 * MIB) == (19, 9.0)
    assert predict_kill(128 * MIB, 8 * MIB, 10, 500, None, None) == (13, 6.0)


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
