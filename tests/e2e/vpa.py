"""The Vertical Pod Autoscaler (built from its v1.8.1 release) beside the test cluster, as a user installs upstream's
deploy/ (issue 31: VPA's answer to an OOM).

The release's CRDs and RBAC are applied as they are; its three components run as host processes, each with a token
of its own ServiceAccount (as metrics-server does in metrics_server.py): the recommender, which reads metrics-server's
metrics.k8s.io (metrics_server.py must be running) and the pods' OOM kills; the updater, which resizes pods in place
or evicts them; and the admission controller, whose mutating webhook gives a recreated pod the recommendation. The
webhook's Service has no selector: its EndpointSlice names the address the admission controller listens on, the first
node's on the bridge, and the caBundle it registers is a CA made here for its serving certificate.

Upstream's flags, but for the components' loops: every 10 s instead of every minute, as an operator would set them
on a test cluster. The recommender's floor for a pod's memory stays at its 250 MiB, which a hog's limit must be above:
under it, VPA's first recommendation raises the hog before any kill, and a floor lowered below the hog's limit gives a
first recommendation at the floor (measured with 10 MiB: a 10 MiB target before the kill's 283 MiB).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e import pki
from tests.e2e.cluster import Cluster
from tests.e2e.harness.control_plane import ADVERTISE_ADDRESS, service_account_token, write_kubeconfig
from tests.e2e.harness.state import BIN
from tests.e2e.support import create_or_keep
from tests.servers import free_port

NAMESPACE = "kube-system"
VPA_BIN = BIN / "vpa"
WEBHOOK_SERVICE = "vpa-webhook"  # upstream's admission-controller-service.yaml
WEBHOOK_CONFIGURATION = "vpa-webhook-config"  # what the admission controller registers
STATUS_LEASE = "vpa-admission-controller"  # what it renews, and the updater waits for
LOOP = "10s"  # --recommender-interval, --updater-interval: upstream's default is 1m
TOKEN_SECONDS = 2 * 3600
READY_TIMEOUT_S = 90.0
COMPONENTS = ("recommender", "updater", "admission-controller")


def release_documents(name: str) -> list[dict[str, Any]]:
    """The documents of one of the release's deploy/ files, as build.sh laid it beside the binaries."""
    return [document for document in yaml.safe_load_all((VPA_BIN / name).read_text()) if document]


def _routing(port: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE},
            "spec": {"ports": [{"port": 443, "protocol": "TCP", "targetPort": port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": WEBHOOK_SERVICE,
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": WEBHOOK_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "oom-killer-e2e",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ADVERTISE_ADDRESS], "conditions": {"ready": True}}],
            "ports": [{"port": port, "protocol": "TCP"}],
        },
    ]


@dataclass(frozen=True)
class Vpa:
    logs: dict[str, Path]  # each component's log

    def tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for name, path in self.logs.items()
        )


def _kubeconfig(cluster: Cluster, workdir: Path, account: str) -> Path:
    path = workdir / f"{account}.kubeconfig"
    token = service_account_token(cluster.api(), NAMESPACE, account, TOKEN_SECONDS)
    write_kubeconfig(path, cluster.server, cluster.pki, account, token=token)
    return path


def _ready(api: Any) -> bool:
    """The webhook registered and the admission controller's status lease renewed (the updater waits for both)."""
    try:
        client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(WEBHOOK_CONFIGURATION)
        client.CoordinationV1Api(api).read_namespaced_lease(STATUS_LEASE, NAMESPACE)
    except ApiException:
        return False
    return True


@contextlib.contextmanager
def start_vpa(cluster: Cluster) -> Iterator[Vpa]:
    """Apply the release's CRDs and RBAC, start the three components; yield once the webhook is registered; on
    leaving, stop them and remove the webhook (a webhook nobody answers would hold every pod's creation)."""
    api = cluster.api()
    workdir = cluster.workdir / "vpa"
    workdir.mkdir(exist_ok=True)
    for document in release_documents("vpa-v1-crd-gen.yaml") + release_documents("vpa-rbac.yaml"):
        create_or_keep(api, document)
    authority = pki.Authority(workdir, "webhook-ca", "oom-killer-e2e-vpa-webhook-ca")
    authority.issue("webhook", WEBHOOK_SERVICE, server_names=(f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc",))
    port = free_port()
    for manifest in _routing(port):
        create_or_keep(api, manifest)
    common = ["--v=2", "--stderrthreshold=info"]
    argv = {
        "recommender": [
            f"--kubeconfig={_kubeconfig(cluster, workdir, 'vpa-recommender')}",
            f"--address=127.0.0.1:{free_port()}",
            f"--recommender-interval={LOOP}",
        ],
        "updater": [
            f"--kubeconfig={_kubeconfig(cluster, workdir, 'vpa-updater')}",
            f"--address=127.0.0.1:{free_port()}",
            f"--updater-interval={LOOP}",
        ],
        "admission-controller": [
            f"--kubeconfig={_kubeconfig(cluster, workdir, 'vpa-admission-controller')}",
            f"--address=127.0.0.1:{free_port()}",
            f"--port={port}",
            f"--client-ca-file={workdir / 'webhook-ca.crt'}",
            f"--tls-cert-file={workdir / 'webhook.crt'}",
            f"--tls-private-key={workdir / 'webhook.key'}",
            f"--webhook-service={WEBHOOK_SERVICE}",
        ],
    }
    # NAMESPACE, as upstream's Deployments set it from the pod's own: where the webhook's Service and the status
    # lease are.
    processes = {
        name: cluster.run_beside(
            f"vpa-{name}", ["/usr/bin/env", f"NAMESPACE={NAMESPACE}", str(VPA_BIN / name), *common, *argv[name]]
        )
        for name in COMPONENTS
    }
    vpa = Vpa({name: cluster.logs / f"vpa-{name}.log" for name in COMPONENTS})
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(api):
            for name, process in processes.items():
                assert process.poll() is None, f"vpa {name} exited:\n{vpa.tail()}"
            assert time.monotonic() < deadline, (
                f"VPA's webhook not registered in {READY_TIMEOUT_S:.0f} s:\n{vpa.tail()}"
            )
            time.sleep(0.5)
        yield vpa
    finally:
        for name in COMPONENTS:
            cluster.end(f"vpa-{name}")
        with contextlib.suppress(ApiException):
            client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(WEBHOOK_CONFIGURATION)
