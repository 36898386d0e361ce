"""The catalogue of alerts (oomtools/alert_catalogue.py): the rule file's alerts, each once, with the kind of kill it
is for and when a stack's settings expect it; importable with the standard library alone."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from oomtools import alert_catalogue as catalogue
from tests.support import PROJECT

RULES = PROJECT / "alerts" / "oom-killer.rules.yaml"


def test_the_catalogue_names_the_rule_files_alerts_in_its_order() -> None:
    rules = [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert list(catalogue.NAMES) == rules
    assert len(set(catalogue.NAMES)) == len(catalogue.NAMES)


def test_each_alert_is_for_one_known_kind_of_kill_and_the_kinds_are_all_covered() -> None:
    assert {alert.kill for alert in catalogue.ALERTS} == set(catalogue.KILL_KINDS)
    assert catalogue.by_name("ContainerOOMKilled").kill == catalogue.CONTAINER_KILL
    assert catalogue.by_name("ContainerCrashLooping").kill == catalogue.CRASH_LOOP
    assert catalogue.by_name("ContainerOOMKillWithoutRestart").kill == catalogue.WORKER_KILL
    assert [alert.name for alert in catalogue.ALERTS if not alert.ends_container] == ["ContainerOOMKillWithoutRestart"]


@pytest.mark.parametrize(
    ("kills", "supervised", "firing"),
    [
        (True, False, ["ContainerOOMKilled", "ContainerCrashLooping"]),  # the hog is PID 1: its kill ends the container
        (True, True, ["ContainerOOMKillWithoutRestart"]),  # a worker dies, the supervisor lives on
        (False, False, []),  # a ceiling, or no replicas: nothing is killed
        (False, True, []),
    ],
)
def test_the_alerts_expected_follow_the_kills_and_the_process_model(
    kills: bool, supervised: bool, firing: list[str]
) -> None:
    expected = catalogue.alerts_expected(kills, supervised)
    assert list(expected) == list(catalogue.NAMES)
    assert [name for name, fires in expected.items() if fires] == firing


@pytest.mark.parametrize(("kills", "supervised"), [(True, False), (True, True), (False, False), (False, True)])
def test_verifys_prediction_expects_what_the_catalogue_does(kills: bool, supervised: bool) -> None:
    from oomtools.verify.prediction import Prediction

    prediction = Prediction(kills, supervised, 7.0 if kills else None, 7.0 if kills else None, int(kills))
    assert prediction.alerts_expected() == catalogue.alerts_expected(kills, supervised)
    # A supervised container whose start line says memory.oom.group=1 dies whole: a container kill's alerts.
    for oom_group, survives in (("1", False), ("0", supervised), ("none", supervised)):
        read = prediction.read_from({"event": "start", "oom_group": oom_group})
        assert read.alerts_expected() == catalogue.alerts_expected(kills, survives)


def test_an_unknown_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(KeyError, match="ContainerOOMKilled, ContainerCrashLooping, ContainerOOMKillWithoutRestart"):
        catalogue.by_name("KubePodCrashLooping")


def test_each_runbook_is_named_after_its_alert_under_docs_runbooks() -> None:
    assert str(catalogue.OOM_KILLED.runbook) == "docs/runbooks/ContainerOOMKilled.md"


def test_the_catalogue_imports_nothing_but_the_standard_library() -> None:
    heavy = ("yaml", "pulumi", "urllib.request", "infra", "oomtools.verify")
    probe = f"import sys, oomtools.alert_catalogue; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
