"""verify's saved results (--save), judging them again (--from) and its HTML report (--report), on the recorded game
day of tests/report_runs.py: a single pod killed twice in the steps its stack announced, the alerts fired, delivered
and resolved after a scale to 0.

The report judges, it does not replay: a saved kill removed, or moved past the steps announced, gives another verdict.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from oomtools import verify
from oomtools.verify import results
from tests import report_runs
from workload import logfmt

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def game_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> report_runs.Said:
    return report_runs.verify_game_day(tmp_path, monkeypatch)


def verdict_of(said: report_runs.Said) -> str:
    return said.out.splitlines()[-1]


def saved(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    return data


def judge_again(
    data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "again"
) -> report_runs.Said:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    argv = ["--from", str(path), "--report", str(tmp_path / f"{name}.html"), "--junit", str(tmp_path / f"{name}.xml")]
    return report_runs.run_verify(argv, monkeypatch)


def charts(html: str) -> list[ET.Element]:
    """Each chart's <svg> (matplotlib's, valid XML) parsed out of the page."""
    return [ET.fromstring(match) for match in re.findall(r"<svg.*?</svg>", html, re.S)]  # noqa: S314 (a file this test wrote)


def group(svg: ET.Element, gid: str) -> ET.Element | None:
    return next((g for g in svg.iter(f"{SVG}g") if g.get("id") == gid), None)


def points(svg: ET.Element, gid: str) -> int:
    found = group(svg, gid)
    assert found is not None, f"no {gid} in the chart"
    return len(list(found.iter(f"{SVG}use")))


def step_lines(data: dict[str, Any], pod: str) -> int:
    return sum(
        text.startswith("event=step ")
        for log in data["observed"]["logs"]
        if log["pod"] == pod
        for _, text in log["lines"]
    )


def test_the_game_day_is_as_predicted_and_saved_with_its_schema_and_version(
    game_day: report_runs.Said, tmp_path: Path
) -> None:
    assert game_day.code == verify.EXIT_AS_PREDICTED
    assert verdict_of(game_day).startswith("verdict=as-predicted oom_kills=2 ")
    data = saved(tmp_path)
    assert (data["schema"], data["version"]) == ("oom-killer/verify-results", results.VERSION)
    assert {"verdict", "checks", "status"}.isdisjoint(data)  # what was seen, not what was judged of it
    assert len(data["observed"]["deaths"]) == 2
    assert step_lines(data, report_runs.POD) == 6 + 7 + 1  # every step line of the three runs, from their logs
    assert data["samples"]["container_memory_working_set_bytes"]  # the cluster's own reading, for the chart
    assert data["delivery"]
    assert data["kube_events"] == []


def test_from_says_and_exits_as_the_live_run_did(
    game_day: report_runs.Said, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = judge_again(saved(tmp_path), tmp_path, monkeypatch)
    assert again.code == game_day.code
    assert again.out == game_day.out  # the watch's lines, the alerts', the coverage and the verdict line
    assert (tmp_path / "again.xml").read_text() == (tmp_path / "verify.xml").read_text()
    assert again.err.startswith(f"verify: judging {tmp_path / 'again.json'}: what a watch of oom-killer from ")


@pytest.mark.usefixtures("game_day")
def test_a_kill_removed_from_the_saved_results_gives_another_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = saved(tmp_path)
    data["observed"]["deaths"].pop()
    again = judge_again(data, tmp_path, monkeypatch)
    assert again.code == verify.EXIT_NOT_AS_PREDICTED
    assert verdict_of(again).startswith("verdict=not-as-predicted oom_kills=1 deaths=1 ")
    assert "2 OOM kills (OOMKilled, exit code 137) (oom_kills=1)" in verdict_of(again)
    assert 'data-verdict="not-as-predicted"' in (tmp_path / "again.html").read_text()


@pytest.mark.usefixtures("game_day")
def test_a_kill_moved_past_the_announced_steps_gives_another_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = saved(tmp_path)
    death = data["observed"]["deaths"][0]
    # Its last step line says step 12, 192 MiB: the kill came in step 13, past the limit and the steps announced.
    death["message"] = report_runs.step_line(12)
    again = judge_again(data, tmp_path, monkeypatch)
    assert again.code == verify.EXIT_NOT_AS_PREDICTED
    assert "each kill in an announced step (predicted_steps=7..8 seen=13(late),8(2/2))" in verdict_of(again)
    page = (tmp_path / "again.html").read_text()
    assert 'data-verdict="not-as-predicted"' in page
    assert "in step 13 (announced 7..8: late)" in page


@pytest.mark.usefixtures("game_day")
def test_a_pod_whose_start_line_says_swap_is_judged_and_drawn_against_the_moved_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The game day's pod on a node that gives it 64 MiB of swap: in its 16 MiB steps, the stack's 7..8 moves to
    # 10..13 (6..8 s to 9..13 s), and its kills in steps 7 and 8 came early.
    data = saved(tmp_path)
    data["observed"]["starts"][report_runs.POD]["swap_max_mib"] = "64"
    again = judge_again(data, tmp_path, monkeypatch)
    assert again.code == verify.EXIT_NOT_AS_PREDICTED
    assert " swap_mib=64 " in verdict_of(again)
    assert "each kill in an announced step (predicted_steps=10..13 seen=7(early),8(early))" in verdict_of(again)
    page = (tmp_path / "again.html").read_text()
    assert "in step 7 (announced 10..13: early), 7 s from the container&#x27;s start (predicted 9..13 s)" in page
    assert "kill announced in steps 10..13 (predictedOomKillStep, moved by 64 MiB of swap)" in page


@pytest.mark.usefixtures("game_day")
def test_a_kill_of_a_stack_that_predicts_none_is_red_on_the_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same kills, judged against a stack whose ceiling holds it (no seconds, no steps exported): neither is on
    # time, since no time was predicted.
    data = saved(tmp_path)
    data["stack"]["outputs"] |= {"predictedSecondsToOomKill": None, "predictedOomKillStep": None}
    again = judge_again(data, tmp_path, monkeypatch)
    assert again.code == verify.EXIT_NOT_AS_PREDICTED
    page = (tmp_path / "again.html").read_text()
    assert page.count('<tr class="failed" data-what="OOM kill">') == 2
    assert 'data-what="OOM kill">' not in page.replace('<tr class="failed" data-what="OOM kill">', "")


@pytest.mark.usefixtures("game_day")
def test_a_supervised_stacks_saved_results_are_judged_by_each_pods_start_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The game day's pod, as if supervised: its start line kept with oom_group=1 (cgroup v2), its kills are the
    # group's, as predicted; the line its log holds (cgroup v1, no oom_group) predicts the worker's kill alone.
    data = saved(tmp_path)
    # A single process's watch reads its hog's start line too (the swap it says moves the steps): v1, no swap.
    assert data["observed"]["starts"] == {report_runs.POD: logfmt.parse(report_runs.START_LINE)}
    data["stack"]["env"]["PROCESS_MODEL"] = "supervised"
    start = {"event": "start", "cgroup": "v2:/kubepods.slice/cri-containerd-c.scope", "oom_group": "1"}
    data["observed"]["starts"] = {report_runs.POD: start}
    group = judge_again(data, tmp_path, monkeypatch, "group")
    assert group.code == verify.EXIT_AS_PREDICTED
    assert " supervised_end=group-kill " in verdict_of(group)
    # Saved before the start lines were kept: each pod's is read from its kept log.
    del data["observed"]["starts"]
    older = judge_again(data, tmp_path, monkeypatch, "older")
    assert older.code == verify.EXIT_NOT_AS_PREDICTED
    assert " supervised_end=worker-kill " in verdict_of(older)
    assert "the kernel kills the worker (worker_kills=0 supervised_end=worker-kill oom_group=none)" in verdict_of(older)


@pytest.mark.usefixtures("game_day")
def test_saved_results_of_a_newer_layout_or_of_something_else_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = {**saved(tmp_path), "version": results.VERSION + 1}
    said = judge_again(newer, tmp_path, monkeypatch, "newer")
    assert (said.code, said.out) == (verify.EXIT_BAD_ARGUMENTS, "")
    assert f"layout version {results.VERSION + 1}; this verify reads 1 to {results.VERSION}" in said.err
    other = judge_again({"kind": "List"}, tmp_path, monkeypatch, "other")
    assert other.code == verify.EXIT_BAD_ARGUMENTS
    assert "not results saved by oom-killer verify --save" in other.err
    broken = saved(tmp_path)
    del broken["observed"]["deaths"][0]["exit_code"]
    assert judge_again(broken, tmp_path, monkeypatch, "broken").code == verify.EXIT_BAD_ARGUMENTS


@pytest.mark.parametrize("option", [["--prometheus", "http://p:9090"], ["--outputs", "{}"], ["--save", "x.json"]])
def test_from_refuses_the_options_of_a_watch(option: list[str], tmp_path: Path) -> None:
    with pytest.raises(verify.arguments.BadArguments, match="--from judges saved results"):
        verify.parse_args(["--from", str(tmp_path / "r.json"), *option])


@pytest.mark.usefixtures("game_day")
def test_the_chart_has_a_point_per_step_line_the_limit_the_range_and_a_mark_per_kill(tmp_path: Path) -> None:
    data = saved(tmp_path)
    (svg,) = charts((tmp_path / "verify.html").read_text())
    steps = step_lines(data, report_runs.POD)
    for series in ("allocated", "rss", "cgroup-usage", "working-set"):
        assert points(svg, f"chart-1-{series}") == steps
    assert group(svg, "chart-1-limit") is not None
    assert group(svg, "chart-1-announced") is not None
    kills = [g for g in svg.iter(f"{SVG}g") if re.fullmatch(r"chart-1-kill-\d+", g.get("id", ""))]
    assert len(kills) == len(data["observed"]["deaths"]) == 2
    back_offs = [g for g in svg.iter(f"{SVG}g") if g.get("id", "").startswith("chart-1-back-off-")]
    assert len(back_offs) == len(data["observed"]["back_offs"])
    (series,) = data["samples"]["container_memory_working_set_bytes"]
    assert points(svg, "chart-1-cluster-working-set") == len(series["points"])


@pytest.mark.usefixtures("game_day")
def test_the_page_loads_nothing_from_anywhere(tmp_path: Path) -> None:
    page = (tmp_path / "verify.html").read_text()
    assert "Content-Security-Policy" in page
    assert "default-src 'none'" in page
    assert "<script" not in page
    assert "@font-face" not in page
    assert "<img" not in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert not re.search(r"url\((?!#)", page)  # only the SVG's own clip paths


@pytest.mark.usefixtures("game_day")
def test_the_same_results_give_the_same_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = saved(tmp_path)
    judge_again(data, tmp_path, monkeypatch, "one")
    judge_again(data, tmp_path, monkeypatch, "two")
    assert (tmp_path / "one.html").read_bytes() == (tmp_path / "two.html").read_bytes()
    assert (tmp_path / "one.html").read_bytes() == (tmp_path / "verify.html").read_bytes()


@pytest.mark.usefixtures("game_day")
def test_the_page_has_the_timeline_tables_facts_and_every_check(tmp_path: Path) -> None:
    page = (tmp_path / "verify.html").read_text()
    timeline = re.findall(r'<tr[^>]* data-what="([^"]+)"', page)
    assert timeline.count("OOM kill") == 2
    assert timeline.count("restart") == 2
    for what in ("alert fired", "alert delivered", "alert resolved"):
        assert timeline.count(what) == 2, what
    assert "in step 7 (announced 7..8: 1/2), 7 s from the container&#x27;s start (predicted 6..8 s)" in page
    assert 'id="coverage"' in page
    assert 'id="nodes"' in page
    for fact in ("6.1.0-40-amd64", "v1.37.2", "containerd://2.4.2", "memory.oom.group"):
        assert fact in page
    cases = [case.get("name") for case in ET.parse(tmp_path / "verify.xml").getroot()]  # noqa: S314 (a file this test wrote)
    rows = re.findall(r'<tr class="check [^"]*" data-depth="(\d)"><td[^>]*>([^<]*)</td>', page)
    names = {name for _, name in rows}
    assert cases
    assert all(case in names for case in cases)
    assert rows[0] == ("0", "oom-killer verify")


def test_without_report_or_save_the_watch_reads_a_log_only_until_its_hogs_start_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[dict[str, Any]] = []
    original = report_runs.GameDayCluster.read_namespaced_pod_log

    def counted(self: report_runs.GameDayCluster, *args: Any, **how: Any) -> str:
        reads.append(how)
        return original(self, *args, **how)

    monkeypatch.setattr(report_runs.GameDayCluster, "read_namespaced_pod_log", counted)
    said = report_runs.run_verify([], monkeypatch)
    assert said.code == verify.EXIT_AS_PREDICTED
    # The first poll comes before the hog wrote its start line, the second reads it: no log is read after that.
    assert reads == [{"_request_timeout": 10, "container": "oom-killer", "timestamps": True}] * 2
    reads.clear()
    report_runs.verify_game_day(tmp_path, monkeypatch)
    assert any(how.get("previous") for how in reads)  # a killed container's log, read once it ended
