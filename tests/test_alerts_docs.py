"""docs/alerts.md's sections on the ready PrometheusRule say what the code does: the label they name is the one the
manifest carries, every generator command they give runs, the scoped expression they show is the generator's, the
Alertmanager configuration they show is the tested example file, and the queries they give are the ones to run."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from infra.monitoring import rule_groups
from oomtools import alerts
from oomtools.promql_scope import scope_expr
from tests.support import PROJECT
from tests.test_readme import page, section

TEXT = page("alerts.md")
GENERATOR = re.compile(r"^venv/bin/python -m oomtools\.alerts (.+)$", re.MULTILINE)


def yaml_blocks(text: str) -> list[object]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]


def test_the_page_names_the_manifest_its_label_and_the_command_that_regenerates_it() -> None:
    text = section("## The rules as a PrometheusRule, without Pulumi", TEXT)
    assert "](../alerts/oom-killer.prometheusrule.yaml)" in text
    assert f"`release: {alerts.DEFAULT_RELEASE}`" in text
    assert alerts.REGENERATE in text
    assert "kubectl apply --namespace monitoring -f alerts/oom-killer.prometheusrule.yaml" in text
    for selector in ("ruleSelector", "ruleNamespaceSelector", "enforcedNamespaceLabel"):
        assert f"{{.spec.{selector}}}" in text, selector
    assert "/api/v1/rules?type=alert" in text


def test_every_generator_command_on_the_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alerts").mkdir()
    commands = GENERATOR.findall(TEXT) + [
        match.removeprefix("venv/bin/python -m oomtools.alerts ")
        for match in re.findall(r"`(venv/bin/python -m oomtools\.alerts [^`]+)`", TEXT)
    ]
    assert len(commands) >= 5
    for command in commands:
        err = io.StringIO()
        assert alerts.main(shlex.split(command), io.StringIO(), err) == 0, (command, err.getvalue())


def test_the_scoped_expression_shown_is_the_generators() -> None:
    text = section("## Scoping the rules to chosen namespaces", TEXT)
    (shown,) = re.findall(r"```text\n(.*?)```", text, re.DOTALL)
    regex = re.search(r"--watch-namespaces '([^']+)'", text)
    assert regex is not None
    (rule,) = [r for r in rule_groups()[0]["rules"] if r["alert"] == "ContainerCrashLooping"]
    assert shown == scope_expr(rule["expr"], regex.group(1))


def test_the_alertmanager_configuration_shown_is_the_tested_example() -> None:
    text = section("## Routing the alerts in Alertmanager", TEXT)
    (shown,) = yaml_blocks(text)
    assert shown == yaml.safe_load((PROJECT / "alerts" / "alertmanager.example.yaml").read_text())


def test_the_scrape_check_asks_for_the_metric_the_silent_kill_alert_rests_on() -> None:
    text = section("## Is container_oom_events_total scraped at all?", TEXT)
    assert "count by (job, metrics_path) (container_oom_events_total)" in text
    (rule,) = [r for r in rule_groups()[0]["rules"] if r["alert"] == "ContainerOOMKillWithoutRestart"]
    assert "container_oom_events_total" in rule["expr"]


def test_the_verify_section_reaches_prometheus_through_a_port_forward() -> None:
    text = section("## make verify with a Prometheus in the cluster", TEXT)
    assert "port-forward service/prometheus-operated 9090:9090" in text
    assert '--prometheus http://localhost:9090"' in text
