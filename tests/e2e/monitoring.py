"""The alerting chain a user runs, beside the test cluster: kube-state-metrics (built from its v2.20.0 release),
Prometheus scraping it and the kubelet's cAdvisor endpoint, Alertmanager (both Debian's), and a webhook receiver
served here on loopback that notes when each notification arrives.

Each reads the cluster as it would in a user's cluster: kube-state-metrics and Prometheus each with a ServiceAccount
of its own, bound to what upstream's manifests grant them (listing pods; reading the kubelet's metrics), and
authenticating with that account's token. Prometheus scrapes the kubelet over TLS, checking its certificate against
the cluster's CA, as kube-prometheus does.

Time runs SPEED times faster than in a user's setup: the rule file's `for:` and look-back durations, the scrape and
evaluation intervals (kube-prometheus' 30 s) and Alertmanager's group_wait and group_interval (its defaults, 30 s and
5 m) are each divided by SPEED, so that a chain of minutes runs in seconds. The kubelet, the kernel and
kube-state-metrics' watch keep their own pace.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils

from infra.monitoring import RULES_FILE
from oomtools import alert_client as prom
from tests.e2e.cluster import Cluster
from tests.e2e.harness.control_plane import http_ok, service_account_token, write_kubeconfig
from tests.e2e.harness.state import BIN
from tests.promtime import compress
from tests.servers import alertmanager_argv, free_port, prometheus_argv
from tests.support import tool_on_path

SPEED = 10
SCRAPE_INTERVAL_S = 30 / SPEED  # kube-prometheus' scrape and evaluation interval
GROUP_WAIT_S = 30 / SPEED  # Alertmanager's defaults
GROUP_INTERVAL_S = 300 / SPEED
MONITORING_NAMESPACE = "monitoring"

# What upstream's manifests grant: kube-state-metrics lists and watches what it is asked to report (here pods only,
# --resources=pods); Prometheus reads the kubelet's metrics (kube-prometheus' prometheus-k8s role: nodes/metrics).
ACCOUNTS: dict[str, list[dict[str, Any]]] = {
    "kube-state-metrics": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
    "prometheus": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}],
}


def _rbac(api: client.ApiClient) -> None:
    utils.create_from_dict(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MONITORING_NAMESPACE}})
    for name, rules in ACCOUNTS.items():
        role = f"oom-killer-e2e-{name}"
        for manifest in (
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": MONITORING_NAMESPACE},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": MONITORING_NAMESPACE}],
            },
        ):
            utils.create_from_dict(api, manifest)


def _token(api: client.ApiClient, account: str) -> str:
    """A token of the monitoring ServiceAccount, for an hour (a chain runs minutes)."""
    return service_account_token(api, MONITORING_NAMESPACE, account, 3600)


@dataclass(frozen=True)
class Notification:
    received_at: float
    status: str  # the group's: firing while any of its alerts fires
    alerts: list[dict[str, Any]]  # each with labels, status (firing or resolved), startsAt, endsAt


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every notification, with the time it arrived."""

    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with webhook.lock:
                    webhook.notifications.append(Notification(time.time(), body["status"], body["alerts"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, alertname: str, namespace: str, status: str) -> list[float]:
        """When notifications arrived that carried the alert (of that namespace) in that status."""
        with self.lock:
            return [
                note.received_at
                for note in self.notifications
                for alert in note.alerts
                if alert["labels"].get("alertname") == alertname
                and alert["labels"].get("namespace") == namespace
                and alert["status"] == status
            ]

    def alertnames(self, namespace: str) -> set[str]:
        with self.lock:
            return {
                alert["labels"]["alertname"]
                for note in self.notifications
                for alert in note.alerts
                if alert["labels"].get("namespace") == namespace
            }


@dataclass
class Chain:
    prometheus: str  # URL
    alertmanager: str
    webhook: Webhook

    def samples(self, selector: str, since: float) -> list[tuple[float, float]]:
        """Every sample Prometheus stored for the selector since then, as (scrape time, value), oldest first."""
        found = prom.samples(self.prometheus, selector, since, time.time())
        return sorted((stamp, value) for _, points in found for stamp, value in points if stamp >= since)

    def first(self, selector: str, since: float) -> float | None:
        """When Prometheus first stored a sample of the selector above 0 (the scrape's own time)."""
        return next((stamp for stamp, value in self.samples(selector, since) if value > 0), None)


def _wait_for(what: str, ready: Any, process: Any, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited:\n{log.read_text(errors='replace')[-2000:]}"
        try:
            if ready():
                return
        except (OSError, prom.PrometheusUnreachable):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} was not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')[-2000:]}")


@dataclass
class Started:
    cluster: Cluster
    names: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for name in reversed(self.names):
            self.cluster.end(name)


def _prometheus_config(cluster: Cluster, workdir: Path, ksm: str, alertmanager: str) -> dict[str, Any]:
    interval = f"{round(SCRAPE_INTERVAL_S * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(workdir / "rules.yaml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            # As kube-prometheus: the exporters' own namespace, pod and container labels are kept (honor_labels).
            {"job_name": "kube-state-metrics", "honor_labels": True, "static_configs": [{"targets": [ksm]}]},
            {
                "job_name": "kubelet-cadvisor",
                "honor_labels": True,
                "scheme": "https",
                "metrics_path": "/metrics/cadvisor",
                "authorization": {"credentials_file": str(workdir / "prometheus.token")},
                "tls_config": {"ca_file": str(cluster.pki / "ca.crt")},
                "static_configs": [{"targets": cluster.kubelets()}],
            },
        ],
    }


def _alertmanager_config(webhook: Webhook) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "namespace"],
            "group_wait": f"{round(GROUP_WAIT_S * 1000)}ms",
            "group_interval": f"{round(GROUP_INTERVAL_S * 1000)}ms",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}],
    }


@contextlib.contextmanager
def start_chain(cluster: Cluster) -> Iterator[Chain]:
    """Start the chain against the cluster; yield it once Prometheus scrapes both exporters; stop it after."""
    prometheus_binary = tool_on_path("prometheus", "prometheus")
    alertmanager_binary = tool_on_path("prometheus-alertmanager", "prometheus-alertmanager")
    workdir = cluster.workdir / "monitoring"
    workdir.mkdir()
    api = cluster.api()
    _rbac(api)
    started = Started(cluster)
    webhook = Webhook()
    try:
        ksm_port, ksm_telemetry = free_port(), free_port()
        write_kubeconfig(
            workdir / "kube-state-metrics.kubeconfig",
            cluster.server,
            cluster.pki,
            "kube-state-metrics",
            token=_token(api, "kube-state-metrics"),
        )
        ksm = cluster.run_beside(
            "kube-state-metrics",
            [
                str(BIN / "kube-state-metrics"),
                f"--kubeconfig={workdir / 'kube-state-metrics.kubeconfig'}",
                "--resources=pods",
                "--host=127.0.0.1",
                f"--port={ksm_port}",
                "--telemetry-host=127.0.0.1",
                f"--telemetry-port={ksm_telemetry}",
            ],
        )
        started.names.append("kube-state-metrics")
        _wait_for(
            "kube-state-metrics",
            lambda: http_ok(f"http://127.0.0.1:{ksm_port}/metrics"),
            ksm,
            cluster.logs / "kube-state-metrics.log",
        )

        webhook_config = workdir / "alertmanager.yml"
        webhook_config.write_text(yaml.safe_dump(_alertmanager_config(webhook)))
        am_port = free_port()
        alertmanager = cluster.run_beside(
            "alertmanager",
            alertmanager_argv(alertmanager_binary, webhook_config, workdir / "alertmanager", am_port),
        )
        started.names.append("alertmanager")
        am_url = f"http://127.0.0.1:{am_port}"
        _wait_for("alertmanager", lambda: http_ok(f"{am_url}/-/ready"), alertmanager, cluster.logs / "alertmanager.log")

        (workdir / "prometheus.token").write_text(_token(api, "prometheus"))
        (workdir / "rules.yaml").write_text(compress(RULES_FILE.read_text(), SPEED))
        (workdir / "prometheus.yml").write_text(
            yaml.safe_dump(_prometheus_config(cluster, workdir, f"127.0.0.1:{ksm_port}", f"127.0.0.1:{am_port}"))
        )
        port = free_port()
        prometheus = cluster.run_beside(
            "prometheus",
            prometheus_argv(prometheus_binary, workdir / "prometheus.yml", workdir / "prometheus", port),
        )
        started.names.append("prometheus")
        url = f"http://127.0.0.1:{port}"
        _wait_for(
            "prometheus (scraping both exporters)",
            lambda: (
                {s["metric"]["job"] for s in prom.query(url, "up == 1")} == {"kube-state-metrics", "kubelet-cadvisor"}
            ),
            prometheus,
            cluster.logs / "prometheus.log",
        )
        yield Chain(url, am_url, webhook)
    finally:
        started.stop()
        webhook.server.shutdown()
