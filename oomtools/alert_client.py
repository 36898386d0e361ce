"""What `make verify` asks Prometheus and Alertmanager about the alerts of alerts/oom-killer.rules.yaml: which are
firing for the stack's namespace, from when, whether they resolved, and where Alertmanager routes them. Stdlib HTTP
only (Prometheus' and Alertmanager's JSON APIs), with a bearer token and a CA bundle for one behind auth."""

from __future__ import annotations

import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from oomtools import alert_catalogue

DEFAULT_ALERTS: Final = alert_catalogue.NAMES  # what verify watches unless told (--alert)


@dataclass(frozen=True)
class Access:
    """How to reach a Prometheus behind auth: a bearer token (sent as `Authorization: Bearer`), a CA bundle that
    signed its TLS certificate, or no certificate check at all (a self-signed certificate on a port-forward)."""

    bearer_token: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else {}

    def tls_context(self) -> ssl.SSLContext:
        """The system's trust store, plus ca_file; or no check at all."""
        if self.insecure_skip_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


OPEN: Final = Access()  # a Prometheus that asks for nothing (a port-forward to its own port, a test's loopback)


class PrometheusUnreachable(Exception):
    """Prometheus did not answer, or answered something that is not its API."""


class AlertmanagerUnreachable(Exception):
    """Alertmanager did not answer, or answered something that is not its API."""


def _fetch(
    base_url: str, path: str, access: Access, timeout: float, unreachable: type[Exception] = PrometheusUnreachable
) -> Any:
    """The JSON an API answers at path; `unreachable` (one line, the URL first) when it does not."""
    url = urllib.parse.urljoin(base_url.rstrip("/") + "/", path.lstrip("/"))
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise unreachable(f"{base_url} is not an http(s) URL")
    request = urllib.request.Request(url, headers=access.headers())  # noqa: S310 (scheme checked above)
    context = access.tls_context() if scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return json.load(response)
    except urllib.error.HTTPError as error:  # answered, but not with the API: 401/403 behind auth, 404 a wrong path
        raise unreachable(f"{url}: HTTP {error.code} {error.reason}") from error
    except (OSError, ValueError) as error:  # URLError (refused, a certificate not trusted), timeouts, bad JSON
        raise unreachable(f"{url}: {error}") from error


def _get(base_url: str, path: str, timeout: float = 5.0, access: Access = OPEN) -> Any:
    body = _fetch(base_url, path, access, timeout)
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusUnreachable(f"{base_url.rstrip('/')}/{path.lstrip('/')}: not a Prometheus API answer")
    return body["data"]


def check_reachable(base_url: str, access: Access = OPEN) -> str:
    """Prometheus' version, or PrometheusUnreachable."""
    data = _get(base_url, "/api/v1/status/buildinfo", access=access)
    return str(data.get("version", "?"))


def query(base_url: str, promql: str, access: Access = OPEN) -> list[dict[str, Any]]:
    """An instant query's result (a vector's samples)."""
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    result: list[dict[str, Any]] = _get(base_url, path, access=access)["result"]
    return result


def rule_names(base_url: str, access: Access = OPEN) -> set[str]:
    """The alerting rules Prometheus has loaded."""
    data = _get(base_url, "/api/v1/rules?type=alert", access=access)
    return {rule["name"] for group in data["groups"] for rule in group["rules"]}


def firing(
    base_url: str, names: tuple[str, ...], namespace: str, access: Access = OPEN
) -> dict[str, list[dict[str, str]]]:
    """For each alert name, the label sets of its firing alerts in the namespace (pending ones are not yet alerts)."""
    found: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for alert in _get(base_url, "/api/v1/alerts", access=access)["alerts"]:
        labels = alert["labels"]
        if alert["state"] == "firing" and labels.get("alertname") in found and labels.get("namespace") == namespace:
            found[labels["alertname"]].append(labels)
    return found


def samples(
    base_url: str, selector: str, since: float, until: float, access: Access = OPEN
) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """Every sample Prometheus stored for a selector from `since` to `until`: each series' labels and its (scrape
    time, value) pairs, oldest first (a range selector's raw samples, not a query_range's resampling)."""
    window = max(1, math.ceil(until - since))
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": f"{selector}[{window}s]", "time": f"{until:.3f}"})
    found = [
        (series["metric"], [(float(stamp), float(value)) for stamp, value in series["values"] if float(stamp) >= since])
        for series in _get(base_url, path, access=access)["result"]
    ]
    return [(labels, points) for labels, points in found if points]  # the window asked was whole seconds


@dataclass(frozen=True)
class Routed:
    """An alert as Alertmanager holds it: active (to be sent to its receivers), suppressed (silenced or inhibited)
    or unprocessed, and the receivers its route sends it to."""

    labels: dict[str, str]
    state: str
    receivers: tuple[str, ...]


def alertmanager_alerts(base_url: str, namespace: str, access: Access = OPEN) -> list[Routed]:
    """The alerts Alertmanager holds for the namespace (API v2), silenced and inhibited ones included."""
    path = "/api/v2/alerts?" + urllib.parse.urlencode({"filter": f'namespace="{namespace}"'})
    body = _fetch(base_url, path, access, 5.0, AlertmanagerUnreachable)
    if not isinstance(body, list):
        raise AlertmanagerUnreachable(f"{base_url}: not an Alertmanager API v2 answer")
    return [
        Routed(
            dict(alert.get("labels", {})),
            str(alert.get("status", {}).get("state", "unprocessed")),
            tuple(str(receiver.get("name")) for receiver in alert.get("receivers", [])),
        )
        for alert in body
    ]


def alertmanager_version(base_url: str, access: Access = OPEN) -> str:
    """Alertmanager's version, or AlertmanagerUnreachable."""
    body = _fetch(base_url, "/api/v2/status", access, 5.0, AlertmanagerUnreachable)
    if not isinstance(body, dict) or "versionInfo" not in body:
        raise AlertmanagerUnreachable(f"{base_url}: not an Alertmanager API v2 answer")
    return str(body["versionInfo"].get("version", "?"))


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
