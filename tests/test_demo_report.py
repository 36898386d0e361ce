"""What `oom-killer demo` writes besides its verdict line, from recorded runs (no engine): --json (the verdict),
--junit (the checks) and --report (the page: memory per step against the limit, a mark per kill)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from oomtools import demo
from tests import report_runs
from tests.test_verify_report import SVG, charts, group, points

OUTPUTS = ["--report", "report.html", "--json", "verdict.json", "--junit", "demo.xml"]


def run(recorded: report_runs.DemoRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.chdir(tmp_path)
    return report_runs.run_demo(recorded, OUTPUTS, monkeypatch)


def kill_marks(svg: ET.Element) -> int:
    return sum(bool(re.fullmatch(r"chart-1-kill-\d+", g.get("id", ""))) for g in svg.iter(f"{SVG}g"))


def test_a_kill_in_an_announced_step_is_as_predicted_in_json_junit_and_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(report_runs.DEMO_KILLED, tmp_path, monkeypatch)
    said = capsys.readouterr().out.splitlines()[-1]
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert code == demo.EXIT_AS_PREDICTED == verdict["exit_code"]
    assert (verdict["schema"], verdict["version"]) == ("oom-killer/demo-verdict", 1)
    assert (verdict["verdict"], verdict["predicted"], verdict["as_predicted"]) == ("OOMKilled", "OOMKilled", True)
    assert said.startswith("verdict=OOMKilled ")
    assert f"killed_in_step={verdict['fields']['killed_in_step']}" in said
    assert verdict["checks"]["children"][1]["children"] == [
        {"name": "kill in step 7", "status": "passed", "detail": "1/2"}
    ]
    suite = ET.parse(tmp_path / "demo.xml").getroot()  # noqa: S314 (a file this test wrote)
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("oom-killer demo", "2", "0")
    (svg,) = charts((tmp_path / "report.html").read_text())
    assert points(svg, "chart-1-allocated") == report_runs.step_lines_of(report_runs.DEMO_KILLED.lines) == 6
    assert group(svg, "chart-1-limit") is not None
    assert group(svg, "chart-1-announced") is not None
    assert kill_marks(svg) == 1


def test_a_kill_before_the_announced_steps_is_not_as_predicted_in_json_junit_and_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = run(report_runs.DEMO_EARLY, tmp_path, monkeypatch)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert code == demo.EXIT_NOT_AS_PREDICTED == verdict["exit_code"]
    assert (verdict["verdict"], verdict["as_predicted"]) == ("OOMKilled-outside-announced-steps", False)
    suite = ET.parse(tmp_path / "demo.xml").getroot()  # noqa: S314 (a file this test wrote)
    failed = [case.get("name") for case in suite if case.find("failure") is not None]
    assert failed == ["the run ends as the settings predict", "each kill in a step its hog announced"]
    page = (tmp_path / "report.html").read_text()
    assert 'data-verdict="OOMKilled-outside-announced-steps"' in page
    assert "in step 4 (announced 7..8: early)" in page


def test_a_supervised_run_draws_each_worker_and_marks_each_worker_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(report_runs.DEMO_SUPERVISED, tmp_path, monkeypatch) == demo.EXIT_AS_PREDICTED
    (svg,) = charts((tmp_path / "report.html").read_text())
    assert points(svg, "chart-1-allocated") == report_runs.step_lines_of(report_runs.SUPERVISED_LINES) == 14
    assert kill_marks(svg) == 2
    rows = re.findall(r'data-what="([^"]+)"', (tmp_path / "report.html").read_text())
    assert rows.count("worker kill") == 2
    assert rows.count("hog start") == 3
