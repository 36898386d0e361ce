"""`make soak`'s runner (tests/soak.py): what it counts from a real pytest-repeat session, and its options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import soak

FLAKY = """
import os
import pytest

def test_steady():
    pass

@pytest.mark.parametrize("layout", ["flat", "swap-1"])
def test_each_layout(layout):
    pass

def test_fails_on_the_second_run(request):
    assert request.node.callspec.params["__pytest_repeat_step_number"] != 1

def test_skips():
    pytest.skip("not here")
"""


def test_the_tally_counts_each_test_across_its_repetitions_without_the_repeat_suffix(tmp_path: Path) -> None:
    (tmp_path / "test_flaky.py").write_text(FLAKY)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--count=3", f"--junitxml={junit}", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    outcome = soak.Outcome()
    soak.read_junit(junit, 3, outcome)

    tallies = {test: (t.runs, t.passes, t.failures, t.skips) for test, t in outcome.tests.items()}
    assert tallies == {
        "test_flaky::test_steady": (3, 3, 0, 0),
        "test_flaky::test_each_layout[flat]": (3, 3, 0, 0),
        "test_flaky::test_each_layout[swap-1]": (3, 3, 0, 0),
        "test_flaky::test_fails_on_the_second_run": (3, 2, 1, 0),
        "test_flaky::test_skips": (3, 0, 0, 3),
    }
    assert outcome.failures == 1


@pytest.mark.parametrize(
    ("name", "count", "expected"),
    [
        ("test_x[3-10]", 10, "test_x"),
        ("test_x[flat-10-10]", 10, "test_x[flat]"),
        ("test_x[swap-1-2-10]", 10, "test_x[swap-1]"),
        ("test_x[swap-1]", 1, "test_x[swap-1]"),
    ],
)
def test_the_repeat_suffix_is_the_last_id_only(name: str, count: int, expected: str) -> None:
    assert soak.without_repetition(name, count) == expected


def test_runs_per_group_and_only() -> None:
    arguments = soak.parse_args(["--runs-v2", "3", "--only", "v2,e2e"])
    assert [group.name for group in arguments.groups] == ["v2", "e2e"]
    assert (arguments.runs_v1, arguments.runs_v2, arguments.runs_container, arguments.runs_e2e) == (25, 3, 25, 10)
    assert [group.name for group in soak.parse_args([]).groups] == ["v1", "v2", "container", "e2e"]


@pytest.mark.parametrize("argv", [["--only", "v3"], ["--runs-v1", "0"]])
def test_a_bad_option_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        soak.parse_args(argv)
    assert refused.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_load_is_every_other_module_of_the_main_suite() -> None:
    load = soak.load_paths()
    soaked = {path for group in soak.GROUPS for path in group.paths}
    assert load
    assert not soaked & set(load)
    assert "tests/test_settings.py" in load
    assert all(path.startswith("tests/test_") for path in load)
    # Every group's modules exist: a renamed module must not silently drop out of the soak.
    assert all((soak.PROJECT / path).is_file() for path in soaked)
