"""metrics-server (built from its v0.8.0 release) beside the test cluster, registered through the API aggregation layer
as on a user's cluster, so that the release's own `kubectl top` reads it.

What upstream's manifests/base declares, less the Deployment: its ServiceAccount, its two ClusterRoles (reading the
kubelets' metrics; reading metrics.k8s.io, aggregated into view, edit and admin), the system:auth-delegator binding
and the kube-system RoleBinding that let it check the API server's callers, a Service, and the APIService
v1beta1.metrics.k8s.io. It runs as a host process with a token of that ServiceAccount (as kube-state-metrics does
in monitoring.py), so the Service has no selector: its EndpointSlice names the address metrics-server listens on,
the first node's on the bridge (an endpoint may not be loopback). The API server proxies to it as the front-proxy
client (control_plane.py's flags) and checks its serving certificate against the APIService's caBundle, the
cluster's CA; metrics-server reads each kubelet's /metrics/resource over TLS, checking the kubelet's serving
certificate against the same CA (the harness's kubelets serve certificates the cluster's CA signed, for their node
IP): no --kubelet-insecure-tls.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import Cluster
from tests.e2e.harness.control_plane import ADVERTISE_ADDRESS, service_account_token, write_kubeconfig
from tests.e2e.harness.state import BIN
from tests.e2e.support import create_or_keep
from tests.servers import free_port

NAMESPACE = "kube-system"
NAME = "metrics-server"
API_SERVICE = "v1beta1.metrics.k8s.io"
# How often metrics-server scrapes every kubelet (upstream's manifests set 15 s): a reading is the kubelet's at
# the last scrape.
METRIC_RESOLUTION_S = 15
TOKEN_SECONDS = 2 * 3600  # the token metrics-server runs with: longer than any session that starts it
READY_TIMEOUT_S = 90.0

_ACCOUNT = {"kind": "ServiceAccount", "namespace": NAMESPACE, "name": NAME}
# upstream's manifests/base/rbac.yaml, as it is.
OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "system:aggregated-metrics-reader",
            "labels": {f"rbac.authorization.k8s.io/aggregate-to-{role}": "true" for role in ("view", "edit", "admin")},
        },
        "rules": [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:metrics-server"},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:metrics-server"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:metrics-server"},
        "subjects": [_ACCOUNT],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "metrics-server:system:auth-delegator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [_ACCOUNT],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "metrics-server-auth-reader", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "extension-apiserver-authentication-reader",
        },
        "subjects": [_ACCOUNT],
    },
]


def _routing(port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The Service, its EndpointSlice (the host address metrics-server listens on) and the APIService."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": NAME,
                    "endpointslice.kubernetes.io/managed-by": "oom-killer-e2e",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ADVERTISE_ADDRESS], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE},
            "spec": {
                "service": {"name": NAME, "namespace": NAMESPACE, "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def api_service_conditions(api: client.ApiClient) -> dict[str, dict[str, Any]]:
    """The APIService's status conditions by type (Available: True once the API server reaches metrics-server)."""
    found = client.ApiregistrationV1Api(api).read_api_service(API_SERVICE)
    document = api.sanitize_for_serialization(found)
    return {c["type"]: c for c in document.get("status", {}).get("conditions", [])}


@dataclass(frozen=True)
class MetricsServer:
    port: int
    log: Any  # Path of its log


@contextlib.contextmanager
def start_metrics_server(cluster: Cluster) -> Iterator[MetricsServer]:
    """Start metrics-server and register it; yield once its APIService is Available; on leaving, unregister it
    first (an APIService nobody answers makes every client's discovery fail) and stop it."""
    api = cluster.api()
    workdir = cluster.workdir / "metrics-server"
    workdir.mkdir(exist_ok=True)
    for manifest in OBJECTS:
        create_or_keep(api, manifest)
    kubeconfig = workdir / "metrics-server.kubeconfig"
    token = service_account_token(api, NAMESPACE, NAME, TOKEN_SECONDS)
    write_kubeconfig(kubeconfig, cluster.server, cluster.pki, NAME, token=token)
    port = free_port()
    process = cluster.run_beside(
        NAME,
        [
            str(BIN / NAME),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={ADVERTISE_ADDRESS}",
            f"--secure-port={port}",
            f"--tls-cert-file={cluster.pki / 'metrics-server.crt'}",
            f"--tls-private-key-file={cluster.pki / 'metrics-server.key'}",
            # The kubelets' serving certificates, checked against the cluster's CA, reached at the node's
            # InternalIP and the port its status names (upstream's manifests: --kubelet-use-node-status-port).
            f"--kubelet-certificate-authority={cluster.pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            f"--metric-resolution={METRIC_RESOLUTION_S}s",
        ],
    )
    log = cluster.logs / f"{NAME}.log"
    routing = _routing(port, (cluster.pki / "ca.crt").read_bytes())
    try:
        for manifest in routing:
            create_or_keep(api, manifest)
        deadline = time.monotonic() + READY_TIMEOUT_S
        conditions: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            assert process.poll() is None, f"metrics-server exited:\n{log.read_text(errors='replace')[-3000:]}"
            conditions = api_service_conditions(api)
            if conditions.get("Available", {}).get("status") == "True":
                break
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"{API_SERVICE} not Available after {READY_TIMEOUT_S:.0f} s: {conditions.get('Available')}\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        yield MetricsServer(port, log)
    finally:
        registration = client.ApiregistrationV1Api(api)
        with contextlib.suppress(ApiException):
            registration.delete_api_service(API_SERVICE)
        with contextlib.suppress(ApiException):
            client.DiscoveryV1Api(api).delete_namespaced_endpoint_slice(NAME, NAMESPACE)
        with contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespaced_service(NAME, NAMESPACE)
        cluster.end(NAME)
