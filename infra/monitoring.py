"""The alert rules the stack can declare as a PrometheusRule: the groups of alerts/oom-killer.rules.yaml, as they
are (one file for Prometheus, promtool's tests and the Prometheus Operator), and the labels a ruleSelector matches."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

RULES_FILE: Final = Path(__file__).resolve().parent.parent / "alerts" / "oom-killer.rules.yaml"
PROMETHEUS_RULE_API_VERSION: Final = "monitoring.coreos.com/v1"
PROMETHEUS_RULE_NAME: Final = "oom-killer-alerts"

# Kubernetes label syntax: a name of at most 63 characters, optionally prefixed by a DNS subdomain and a slash;
# a value of at most 63 characters, empty or alphanumeric at both ends.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def rule_groups(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The rule file's groups, as Prometheus reads them (a PrometheusRule's spec.groups takes them as they are)."""
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def _valid_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _PREFIX.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def parse_labels(text: str) -> dict[str, str]:
    """`key=value,key=value` (as `kubectl label` writes them) into labels; ValueError says what is wrong."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals:
            raise ValueError(f"{item!r} is not key=value")
        if not _valid_key(key):
            raise ValueError(f"{key!r} is not a Kubernetes label name")
        if len(value) > 63 or not (value == "" or _NAME.fullmatch(value)):
            raise ValueError(f"{value!r} (for {key}) is not a Kubernetes label value")
        if key in labels:
            raise ValueError(f"{key!r} is given twice")
        labels[key] = value
    return labels
