"""The pure pieces of the hog's loop: the plan it announces, the size of each step, its log lines."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from workload import logfmt
from workload.main import next_step_mib, predict_kill, write_termination_message
from workload.memory import MIB, allocate, rss_bytes
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
