"""prometheusRule: the alerts declared as a Prometheus Operator PrometheusRule whose groups are the rule file's,
valid to the Operator's CRD; and docs/alerts.md showing that same file."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from infra.monitoring import RULES_FILE, rule_groups
from infra.names import parse_labels
from infra.settings import ConfigError
from oomtools.render import Rendered, render
from tests.support import PROJECT, require
from tests.test_readme import page

PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
CRD = PROJECT.parent / "shared" / "schemas" / "prometheusrule-crd.json"


def crd_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema, with its one Go-only regexp (a flag after ^) written the way Python's re reads it."""
    require(CRD.exists(), f"the PrometheusRule CRD is not at {CRD} (shared/ beside the project)")
    text = CRD.read_text().replace('"^(?i)(abort|warn)?$"', '"(?i)^(abort|warn)?$"')
    crd = json.loads(text)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def rule_of(rendered: Rendered) -> dict[str, Any]:
    return rendered.one(PROMETHEUS_RULE).inputs


def test_no_prometheus_rule_unless_asked() -> None:
    assert render({}).of_type(PROMETHEUS_RULE) == []
    assert render({"prometheusRule": "false"}).of_type(PROMETHEUS_RULE) == []


def test_the_prometheus_rule_holds_the_rule_files_groups_as_they_are() -> None:
    rule = rule_of(render({"prometheusRule": "true"}, stack_name="dev"))
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == {"groups": yaml.safe_load(RULES_FILE.read_text())["groups"]}
    assert rule["metadata"]["namespace"] == "oom-killer-dev"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "oom-killer"


def test_the_rule_selectors_labels_are_on_the_prometheus_rule() -> None:
    rendered = render({"prometheusRule": "true", "prometheusRuleLabels": "release=kube-prometheus-stack, team=sre"})
    labels = rule_of(rendered)["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack"
    assert labels["team"] == "sre"
    # the namespace comes first: the engine must create it before the rule
    assert "namespace" in rendered.dependencies["prometheus-rule"]


def test_the_prometheus_rule_validates_against_the_operators_crd_schema() -> None:
    rule = rule_of(render({"prometheusRule": "true", "prometheusRuleLabels": "release=kube-prometheus-stack"}))
    jsonschema.validate(rule, crd_schema())


def test_the_crd_schema_check_can_fail() -> None:
    rule = rule_of(render({"prometheusRule": "true"}))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "a minute"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, crd_schema())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"prometheusRule": "yes"}, r"prometheusRule='yes': must be true or false"),
        ({"prometheusRule": "true", "prometheusRuleLabels": "release"}, r"'release' is not key=value"),
        ({"prometheusRule": "true", "prometheusRuleLabels": "a b=c"}, r"'a b' is not a Kubernetes label name"),
        ({"prometheusRule": "true", "prometheusRuleLabels": "a=b c"}, r"'b c' \(for a\) is not a Kubernetes label"),
        ({"prometheusRule": "true", "prometheusRuleLabels": "a=1,a=2"}, r"'a' is given twice"),
        ({"prometheusRuleLabels": "release=x"}, r"the PrometheusRule, which is not declared"),
    ],
)
def test_a_bad_prometheus_rule_setting_is_refused_naming_key_and_value(config: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(config)


def test_label_text_parses_as_kubectl_writes_it() -> None:
    assert parse_labels("") == {}
    assert parse_labels("release=kube-prometheus-stack") == {"release": "kube-prometheus-stack"}
    assert parse_labels("example.com/team=sre,empty=") == {"example.com/team": "sre", "empty": ""}
    with pytest.raises(ValueError, match="not a Kubernetes label name"):
        parse_labels("Example.com/team=sre")  # a prefix is a DNS subdomain: lowercase
    with pytest.raises(ValueError, match="not a Kubernetes label value"):
        parse_labels(f"a={'x' * 64}")


def test_the_alerts_page_shows_the_rule_file_itself() -> None:
    text = page("alerts.md")
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    rule_files = [block for block in blocks if isinstance(block, dict) and "groups" in block]
    assert rule_files == [{"groups": rule_groups()}], "docs/alerts.md shows the rule file once, as it is"
    for key in ("prometheusRule", "prometheusRuleLabels", "alerts/oom-killer.rules.yaml"):
        assert f"`{key}" in text, key
