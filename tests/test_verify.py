"""make verify's pure parts: arguments, the prediction's window, the checks and the JUnit report."""

from __future__ import annotations

import datetime
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from oomtools import verify
from oomtools.alerts import AlertRecord
from workload.predict import KillRange


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45)])
def test_durations_read_as_kubectl_and_prometheus_write_them(text: str, seconds: float) -> None:
    assert verify.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "soon"],
        ["--timeout", "0"],
        ["--alert", "ContainerOOMKilled"],
        ["--kills", "0"],
        ["--prometheus", "http://p", "--alert", "Nope"],
        ["--no-such-flag"],
    ],
)
def test_bad_arguments_are_exit_2_in_one_line(argv: list[str]) -> None:
    err = io.StringIO()
    assert verify.main(argv, out=io.StringIO(), err=err) == verify.EXIT_BAD_ARGUMENTS
    assert len(err.getvalue().strip().splitlines()) == 1


def test_a_kill_is_on_time_within_the_predicted_window_and_its_slack() -> None:
    prediction = verify.Prediction(kills=True, supervised=False, earliest=7, latest=7, replicas=1)
    assert prediction.on_time(6)
    assert prediction.on_time(12)
    assert not prediction.on_time(5.5)
    assert not prediction.on_time(12.5)


def test_the_alerts_expected_follow_the_process_model() -> None:
    single = verify.Prediction(True, False, 7, 7, 1).alerts_expected()
    supervised = verify.Prediction(True, True, 7, 7, 1).alerts_expected()
    held = verify.Prediction(False, False, None, None, 1).alerts_expected()
    assert [name for name, fires in single.items() if fires] == ["ContainerOOMKilled", "ContainerCrashLooping"]
    assert [name for name, fires in supervised.items() if fires] == ["ContainerOOMKillWithoutRestart"]
    assert not any(held.values())


def test_an_expected_alert_that_never_fired_fails_the_verdict_and_the_junit_report(tmp_path: Path) -> None:
    prediction = verify.Prediction(True, False, 7, 7, 1)
    records = [AlertRecord("ContainerOOMKilled", expected=True), AlertRecord("ContainerOOMKillWithoutRestart", False)]
    checks = verify.checks_for(prediction, verify.Observed(), 2, records)
    failed = {check.name for check in checks if not check.ok}
    assert "alert ContainerOOMKilled fires" in failed
    assert "alert ContainerOOMKillWithoutRestart stays quiet" not in failed
    assert "2 OOM kills (OOMKilled, exit code 137)" in failed
    report = tmp_path / "verify.xml"
    verify.write_junit(report, checks, 1.0)
    suite = ET.parse(report).getroot()  # noqa: S314 (the report this test had written)
    assert suite.get("failures") == str(len(failed))
    assert suite.get("tests") == str(len(checks))


def oom_death(last_step: int | None, container_id: str) -> verify.Death:
    started = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)
    message = "" if last_step is None else f"event=step step={last_step} allocated_mib={16 * last_step}"
    return verify.Death(
        "pod", "oom-killer", container_id, "OOMKilled", 137, message, started,
        started + datetime.timedelta(seconds=7), 0,
    )  # fmt: skip


def test_each_kill_is_held_to_the_steps_the_stack_announced_and_the_check_says_where() -> None:
    steps = KillRange(7, 8, 8, 1000)
    prediction = verify.Prediction(True, False, 6, 8, 1, steps)
    observed = verify.Observed()
    observed.deaths = {"a": oom_death(6, "a"), "b": oom_death(7, "b")}  # killed in steps 7 and 8
    (check,) = [c for c in verify.checks_for(prediction, observed, 2, []) if c.name == "each kill in an announced step"]
    assert check.ok
    assert check.detail == "predicted_steps=7..8 seen=7(1/2),8(2/2)"
    # A kill in step 5 (the termination message names step 4) was not announced: the check fails.
    observed.deaths["c"] = oom_death(4, "c")
    (check,) = [c for c in verify.checks_for(prediction, observed, 2, []) if c.name == "each kill in an announced step"]
    assert not check.ok
    assert "5(early)" in check.detail
    # No message (killed before its first step line): step 1.
    assert prediction.kill_step(oom_death(None, "d")) == 1
