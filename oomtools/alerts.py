"""What `make verify` asks Prometheus: which of the alerts are firing for the stack's namespace, from when, and
whether they resolved. Stdlib HTTP only (Prometheus' JSON API)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_ALERTS: Final = ("ContainerOOMKilled", "ContainerCrashLooping", "ContainerOOMKillWithoutRestart")


class PrometheusUnreachable(Exception):
    """Prometheus did not answer, or answered something that is not its API."""


def _get(base_url: str, path: str, timeout: float = 5.0) -> Any:
    url = urllib.parse.urljoin(base_url.rstrip("/") + "/", path.lstrip("/"))
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise PrometheusUnreachable(f"{base_url} is not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            body = json.load(response)
    except (OSError, ValueError) as error:  # URLError, refused, timeouts, bad JSON
        raise PrometheusUnreachable(f"{url}: {error}") from error
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusUnreachable(f"{url}: not a Prometheus API answer")
    return body["data"]


def check_reachable(base_url: str) -> str:
    """Prometheus' version, or PrometheusUnreachable."""
    data = _get(base_url, "/api/v1/status/buildinfo")
    return str(data.get("version", "?"))


def query(base_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result (a vector's samples)."""
    result: list[dict[str, Any]] = _get(base_url, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))[
        "result"
    ]
    return result


def rule_names(base_url: str) -> set[str]:
    """The alerting rules Prometheus has loaded."""
    data = _get(base_url, "/api/v1/rules?type=alert")
    return {rule["name"] for group in data["groups"] for rule in group["rules"]}


def firing(base_url: str, names: tuple[str, ...], namespace: str) -> dict[str, list[dict[str, str]]]:
    """For each alert name, the label sets of its firing alerts in the namespace (pending ones are not yet alerts)."""
    found: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for alert in _get(base_url, "/api/v1/alerts")["alerts"]:
        labels = alert["labels"]
        if alert["state"] == "firing" and labels.get("alertname") in found and labels.get("namespace") == namespace:
            found[labels["alertname"]].append(labels)
    return found


@dataclass
class AlertRecord:
    """One alert over the run: when verify first saw it firing and, after that, when it saw it gone."""

    name: str
    expected: bool  # the stack's settings predict it fires (asked-for alerts always are)
    fired_at: float | None = None
    resolved_at: float | None = None

    def observe(self, is_firing: bool, now: float) -> None:
        if is_firing and self.fired_at is None:
            self.fired_at = now
        elif not is_firing and self.fired_at is not None and self.resolved_at is None:
            self.resolved_at = now
        elif is_firing and self.resolved_at is not None:
            self.resolved_at = None  # fired again: not resolved after all

    def latency(self, kill_at: float | None) -> float | None:
        """Seconds from the kill to verify seeing the alert fire (within verify's poll interval)."""
        if self.fired_at is None or kill_at is None:
            return None
        return self.fired_at - kill_at

    @property
    def as_predicted(self) -> bool:
        return (self.fired_at is not None) == self.expected
