"""The reports as a person sees them: each page opened in Debian's chromium, headless (tests/browser.py), with the
charts drawn (a point per step line, the limit, a mark per kill) and the tables there. Needs chromium and
chromium-driver: skipped without them, failed where CI is set. Both reports come from recorded runs
(tests/report_runs.py): no cluster, no engine."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import browser, report_runs
from tests.support import require


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    lacking = browser.missing()
    require(lacking is None, lacking or "")
    with browser.chromium() as opened:
        yield opened


def count(driver: Any, selector: str) -> int:
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, selector))


def shown(driver: Any, selector: str) -> bool:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return bool(found) and all(element.is_displayed() and element.size["height"] > 0 for element in found)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_verify_s_report_opens_with_its_chart_and_tables(
    driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = report_runs.verify_game_day(tmp_path, monkeypatch)
    data = json.loads((tmp_path / "results.json").read_text())
    steps = sum(text.startswith("event=step ") for log in data["observed"]["logs"] for _, text in log["lines"])
    driver.get((tmp_path / "verify.html").as_uri())
    assert driver.title == "oom-killer verify: as-predicted"
    assert said.out.splitlines()[-1] in driver.find_element("id", "verdict").text
    assert shown(driver, "figure.memory-chart svg")
    for series in ("allocated", "rss", "cgroup-usage", "working-set"):
        assert count(driver, f"#chart-1-{series} use") == steps
    assert count(driver, "#chart-1-limit") == 1
    assert count(driver, "#chart-1-announced") == 1
    assert count(driver, "g[id^='chart-1-kill-']") == len(data["observed"]["deaths"]) == 2
    series = data["samples"]["container_memory_working_set_bytes"]
    assert count(driver, "#chart-1-cluster-working-set use") == len(series[0]["points"])
    assert count(driver, "#timeline-table tbody tr") >= 2 + 2 + 6  # the kills, the restarts, the alerts
    assert shown(driver, "#coverage")
    assert shown(driver, "#nodes")
    assert shown(driver, "#checks-table")
    cases = {case.get("name") for case in ET.parse(tmp_path / "verify.xml").getroot()}  # noqa: S314 (a file this test wrote)
    rows = {
        row.text.split("\n")[0] for row in driver.find_elements("css selector", "#checks-table tr.check td:first-child")
    }
    assert cases <= rows
    browser.screenshot(driver, tmp_path / "verify.png")
    width, height = png_size(tmp_path / "verify.png")
    assert width >= 1200
    assert height > 1500


def test_the_demo_s_report_opens_with_a_point_per_step_and_its_kill(
    driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert report_runs.run_demo(report_runs.DEMO_KILLED, ["--report", "demo.html"], monkeypatch) == 0
    driver.get((tmp_path / "demo.html").as_uri())
    assert driver.title == "oom-killer demo: OOMKilled"
    assert count(driver, "#chart-1-allocated use") == report_runs.step_lines_of(report_runs.DEMO_KILLED.lines)
    assert count(driver, "#chart-1-limit") == 1
    assert count(driver, "g[id^='chart-1-kill-']") == 1
    assert shown(driver, "#timeline-table")
    assert shown(driver, "#engine")
