"""Make the report screenshots in docs/ again: `venv/bin/python -m tests.screenshots` (`make screenshots`).

Writes verify's report of the recorded game day (tests/report_runs.py) and the demo's of a recorded run, opens each in
Debian's chromium (tests/browser.py) and keeps docs/report-verify.png (the page's top: the verdict, the facts, the
first chart; the README's), docs/report-verify-full.png and docs/report-demo.png. With `--from FILE`, verify's page is
made from a real run's saved results (`oom-killer verify --save FILE`), and `--demo-report FILE` takes a real demo's
page as it is.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pytest

from tests import browser, report_runs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.screenshots", description=__doc__)
    parser.add_argument("--from", dest="results", type=Path, help="a real verify run's saved results")
    parser.add_argument("--demo-report", type=Path, help="a real demo run's report (oom-killer demo --report)")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    lacking = browser.missing()
    if lacking:
        print(f"screenshots: {lacking}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as monkeypatch:
        work = Path(folder)
        if args.results is not None:
            said = report_runs.run_verify(
                ["--from", str(args.results), "--report", str(work / "verify.html")], monkeypatch
            )
        else:
            said = report_runs.verify_game_day(work, monkeypatch)
        print(said.out.splitlines()[-1])
        demo_page = args.demo_report
        if demo_page is None:
            demo_page = work / "demo.html"
            report_runs.run_demo(report_runs.DEMO_KILLED, ["--report", str(demo_page)], monkeypatch)
        with browser.chromium() as driver:
            driver.get((work / "verify.html").as_uri())
            browser.screenshot(driver, args.out / "report-verify.png", height=1300)
            browser.screenshot(driver, args.out / "report-verify-full.png")
            driver.get(demo_page.resolve().as_uri())
            browser.screenshot(driver, args.out / "report-demo.png")
    for name in ("report-verify.png", "report-verify-full.png", "report-demo.png"):
        print(f"screenshots: wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
