"""The alert rules the stack can declare as a PrometheusRule: the groups of alerts/oom-killer.rules.yaml, as they
are (one file for Prometheus, promtool's tests and the Prometheus Operator), and the labels a ruleSelector matches."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

RULES_FILE: Final = Path(__file__).resolve().parent.parent / "alerts" / "oom-killer.rules.yaml"
PROMETHEUS_RULE_API_VERSION: Final = "monitoring.coreos.com/v1"
PROMETHEUS_RULE_NAME: Final = "oom-killer-alerts"


def rule_groups(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The rule file's groups, as Prometheus reads them (a PrometheusRule's spec.groups takes them as they are)."""
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups
