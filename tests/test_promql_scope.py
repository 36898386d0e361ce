"""The scoper (oomtools/promql_scope.py) scopes every aggregation Prometheus documents, and refuses, with an error
that says what to write instead, what it cannot scope for sure: a grouping modifier without its label list, a name
used as an aggregation that it does not know as one, an aggregation without its argument."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from oomtools import alerts
from oomtools.promql_scope import AGGREGATIONS, UnscopableExpr, scope_expr
from tests.test_alerts import promtool

# Prometheus' docs (querying/operators, "Aggregation operators"), with the parameter each takes.
DOCUMENTED: dict[str, str] = {
    **dict.fromkeys(("sum", "avg", "min", "max", "group", "count", "stddev", "stdvar"), ""),
    **dict.fromkeys(("bottomk", "topk", "limitk"), "2, "),
    "limit_ratio": "0.5, ",
    "quantile": "0.9, ",
    "count_values": '"value", ',
}
EXPERIMENTAL = {"limitk", "limit_ratio"}  # Prometheus 3's, behind --enable-feature=promql-experimental-functions


def test_the_scoper_knows_every_documented_aggregation() -> None:
    assert set(DOCUMENTED) == AGGREGATIONS


@pytest.mark.parametrize("operator", sorted(DOCUMENTED))
@pytest.mark.parametrize("grouping", ["by", "without", "BY"])
def test_an_aggregation_with_its_grouping_first_scopes_its_argument_not_its_name(operator: str, grouping: str) -> None:
    parameter = DOCUMENTED[operator]
    expr = f"{operator} {grouping} (pod) ({parameter}up)"
    assert scope_expr(expr, "a|b") == f'{operator} {grouping} (pod) ({parameter}up{{namespace=~"a|b"}})'


def test_the_scoped_aggregations_are_promql_to_prometheus(tmp_path: Path) -> None:
    rules = [
        {"record": f"scoped:{operator}", "expr": scope_expr(f"{operator} by (pod) ({DOCUMENTED[operator]}up)", "a|b")}
        for operator in sorted(set(DOCUMENTED) - EXPERIMENTAL)  # Debian's promtool predates the experimental ones
    ]
    path = tmp_path / "scoped.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "scoped", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("modifier", ["group_left", "group_right", "GROUP_LEFT"])
def test_a_group_modifier_without_its_label_list_is_refused(modifier: str) -> None:
    expr = f"kube_pod_info * on (namespace, pod) {modifier} kube_pod_labels"
    with pytest.raises(UnscopableExpr, match=rf"{modifier} without a label list.*write {modifier}\(\) for an empty"):
        scope_expr(expr, "a|b")


@pytest.mark.parametrize("modifier", ["group_left", "group_right"])
def test_a_group_modifier_with_its_label_list_is_scoped_on_both_sides(modifier: str) -> None:
    expr = f"kube_pod_info * on (namespace, pod) {modifier} (node) kube_pod_labels"
    assert scope_expr(expr, "a|b") == (
        f'kube_pod_info{{namespace=~"a|b"}} * on (namespace, pod) {modifier} (node) kube_pod_labels{{namespace=~"a|b"}}'
    )
    empty = f"kube_pod_info * on (namespace, pod) {modifier}() kube_pod_labels"
    assert scope_expr(empty, "a|b").endswith(f'{modifier}() kube_pod_labels{{namespace=~"a|b"}}')


def test_an_aggregation_the_scoper_does_not_know_is_refused_not_taken_for_a_metric() -> None:
    with pytest.raises(UnscopableExpr, match=r"sample_k by \(\.\.\.\): not an aggregation the scoper knows \(avg, "):
        scope_expr("sample_k by (pod) (3, up)", "a|b")
    with pytest.raises(UnscopableExpr, match="newagg without"):
        scope_expr("newagg without (pod) (up)", "a|b")


@pytest.mark.parametrize("operator", ["sum", "limitk", "Count"])
def test_an_aggregation_without_its_argument_is_refused(operator: str) -> None:
    with pytest.raises(UnscopableExpr, match=rf"{operator} is an aggregation, not a metric: .*{operator}\(\.\.\.\)"):
        scope_expr(f"{operator} > 0", "a|b")


def test_the_generator_names_the_rule_it_cannot_scope_and_fails_as_a_bad_option(tmp_path: Path) -> None:
    rule = {"alert": "PodLabelled", "expr": "kube_pod_info * on (pod) group_left kube_pod_labels > 0"}
    rules = tmp_path / "custom.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "custom", "rules": [rule]}]}))
    with pytest.raises(ValueError, match="PodLabelled's expression: group_left without a label list"):
        alerts.generate(watch_namespaces="a|b", rules_file=rules)
