"""The alert rules in alerts/: valid to Prometheus, and each alert fires where it should and stays quiet where it
should not (promtool's unit tests next to the rules: an OOM kill loop, a supervised worker's silent kills, a healthy
pod, a loop that stops)."""

from __future__ import annotations

import subprocess

import yaml

from oomtools.alert_catalogue import NAMES
from tests.support import PROJECT, tool_on_path

ALERTS = PROJECT / "alerts"
RULES = ALERTS / "oom-killer.rules.yaml"
RULE_TESTS = ALERTS / "oom-killer.rules.test.yaml"
ALERT_NAMES = set(NAMES)


def promtool() -> str:
    return tool_on_path("promtool", "prometheus")


def test_promtool_accepts_the_rule_file() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_promtools_unit_tests_of_the_rules_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=ALERTS, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == ALERT_NAMES
    assert quiet == ALERT_NAMES


def test_every_rule_has_for_severity_and_the_annotations_kube_prometheus_gives() -> None:
    (group,) = yaml.safe_load(RULES.read_text())["groups"]
    rules = group["rules"]
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] == "warning", rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
        for label in ("namespace", "pod", "container"):
            assert f"{{{{ $labels.{label} }}}}" in annotations["description"], (rule["alert"], label)
