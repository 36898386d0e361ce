"""A report from a real run, checked as `make e2e` checks it: `verify --from` on the saved results gives the same
verdict line and exit code, and the page opened in Debian's chromium has a chart per pod with a point per step line the
watch kept, the limit, and a mark per kill, the timeline and every check; a screenshot is kept beside it.

The e2e modules call `check` after a `verify --report FOLDER/report.html --save FOLDER/results.json` run; the folder
(REPORTS/<name>, kept after the run) is named by the test.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from oomtools import verify
from tests import browser
from tests.support import require
from workload import logfmt

REPORTS = Path(os.environ.get("E2E_REPORTS") or Path(tempfile.gettempdir()) / "oom-killer-e2e-reports")


def folder(name: str) -> Path:
    """Where a test's report, saved results and screenshot go (made afresh)."""
    path = REPORTS / name
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.iterdir():
        stale.unlink()
    return path


def report_args(where: Path) -> list[str]:
    return ["--report", str(where / "report.html"), "--save", str(where / "results.json")]


def _steps_per_pod(data: dict[str, Any]) -> list[int]:
    observed = data["observed"]
    pods = sorted(set(observed["pods_seen"]) | {log["pod"] for log in observed["logs"]})
    return [
        sum(text.startswith("event=step ") for log in observed["logs"] if log["pod"] == pod for _, text in log["lines"])
        for pod in pods
    ]


def check(where: Path, code: int, verdict: dict[str, str]) -> str:
    """Judge the saved results again (the same exit code, the same verdict line's fields) and look at the page; returns
    the fact line's value. Fails on a difference."""
    results = where / "results.json"
    out, err = io.StringIO(), io.StringIO()
    again = verify.main(["--from", str(results), "--report", str(where / "from.html")], out=out, err=err)
    assert again == code, (again, code, err.getvalue())
    assert logfmt.parse(out.getvalue().splitlines()[-1]) == verdict
    data = json.loads(results.read_text())
    steps = _steps_per_pod(data)
    deaths = data["observed"]["deaths"]
    kills = sum(d["reason"] == "OOMKilled" for d in deaths) + len(data["observed"]["worker_kills"])
    lacking = browser.missing()
    require(lacking is None, lacking or "")
    with browser.chromium() as driver:
        driver.get((where / "report.html").as_uri())
        find = driver.find_elements
        for number, count in enumerate(steps, start=1):
            drawn = len(find("css selector", f"#chart-{number}-allocated use"))
            assert drawn == count, f"chart {number}: {drawn} points for {count} step lines"
            if count:
                assert len(find("css selector", f"#chart-{number}-limit")) == 1, f"chart {number} has no limit"
        marks = len(find("css selector", "g[id^='chart-'][id*='-kill-']"))
        assert marks == kills, f"{marks} kill marks for {kills} kills"
        assert find("css selector", "#timeline-table tbody tr")
        assert find("css selector", "#checks-table tr.check")
        browser.screenshot(driver, where / "report.png")
    return f"{where} steps={','.join(map(str, steps))} kills={kills} from_exit={again}"
