"""Headlamp v0.45.0 (SIG UI's dashboard, built from third_party by builds/build.sh) run in the test cluster as a user
runs it in-cluster, and reached on loopback as its docs say: `kubectl port-forward -n headlamp service/headlamp`.

What its Helm chart declares with its defaults, in a namespace of its own: the ServiceAccount and its
ClusterRoleBinding to cluster-admin, the Deployment running the image with `-in-cluster` (the image's entrypoint
serves the UI from /headlamp/frontend), and the Service on port 80. In-cluster, Headlamp proxies a person's requests
with the token they sign in with, never its own (unless `-unsafe-use-service-account-token`): the person here signs
in with a token of a ServiceAccount bound to `view`, the least that shows pods, events and (aggregated into view
by metrics-server's ClusterRole) their metrics.

The image is made here from the two built halves, laid out as upstream's Dockerfile lays them, on no base (the
server is a static Go binary). The test cluster has no kube-proxy, so the `kubernetes` Service's ClusterIP leads
nowhere: the container is told the API server's endpoint (the advertise address the Service's EndpointSlice names),
where a relay (socat, standing in for kube-proxy) forwards to the API server on loopback.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import Cluster, as_json
from tests.e2e.harness.control_plane import ADVERTISE_ADDRESS, http_ok, service_account_token
from tests.e2e.harness.state import BIN
from tests.e2e.support import create_or_keep, workload_archive
from tests.servers import free_port

VERSION = "0.45.0"  # builds/build.sh: headlamp_version
NAMESPACE = "headlamp"
NAME = "headlamp"
IMAGE = f"localhost/oom-killer-e2e/headlamp:{VERSION}"
SERVER = BIN / "headlamp-server"
FRONTEND = BIN / "headlamp-frontend"
CONTAINER_PORT = 4466  # upstream's image and chart
CLUSTER_NAME = "main"  # the in-cluster context's name where no kubeadm-config names the cluster
VIEWER = "oom-killer-viewer"
TOKEN_SECONDS = 3600
READY_TIMEOUT_S = 180.0
RELAY = "apiserver-relay"
PORT_FORWARD = "headlamp-port-forward"

# The image, laid out as upstream's Dockerfile lays it (its entrypoint too), run as the non-root user its chart names,
# with a home of its own (the server makes its plugin folders under ~/.config) and a /tmp of its own.
DOCKERFILE = f"""FROM scratch
COPY headlamp-server /headlamp/headlamp-server
COPY frontend /headlamp/frontend
COPY plugins /headlamp/plugins
COPY --chown=100:101 home /home/headlamp
COPY --chown=100:101 tmp /tmp
ENV HOME=/home/headlamp
USER 100:101
EXPOSE {CONTAINER_PORT}
ENTRYPOINT ["/headlamp/headlamp-server", "-html-static-dir", "/headlamp/frontend", "-plugins-dir", "/headlamp/plugins"]
"""


def missing() -> str | None:
    """What of Headlamp's build this machine lacks (None: nothing)."""
    for path in (SERVER, FRONTEND / "index.html"):
        if not path.exists():
            return f"{path} is not built (tests/e2e/builds/build.sh builds it)"
    if shutil.which("socat") is None:
        return "no socat (Debian: apt-get install socat)"
    return None


def objects(api_host: str, api_port: int) -> list[dict[str, Any]]:
    """The chart's objects with its defaults (name headlamp, namespace headlamp), and the viewer's account."""
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": NAME}
    probe = {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{NAME}-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 100, "runAsGroup": 101},
                        "containers": [
                            {
                                "name": NAME,
                                "image": IMAGE,
                                "imagePullPolicy": "Never",  # loaded into the node, as the hog's image is
                                "args": ["-in-cluster", "-plugins-dir=/headlamp/plugins"],
                                # No kube-proxy here: the API server's endpoint, where the ClusterIP would lead.
                                "env": [
                                    {"name": "KUBERNETES_SERVICE_HOST", "value": api_host},
                                    {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
                                ],
                                "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                                "readinessProbe": probe,
                                "livenessProbe": probe,
                                "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], "selector": labels},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": VIEWER, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": VIEWER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": VIEWER, "namespace": NAMESPACE}],
        },
    ]


def image_archive(engine: docker.DockerClient) -> bytes:
    """The image, made from the built server and UI, as a `docker save` archive for the node."""
    with tempfile.TemporaryDirectory() as folder:
        context = Path(folder)
        shutil.copy(SERVER, context / "headlamp-server")
        shutil.copytree(FRONTEND, context / "frontend")
        for empty in ("plugins", "home", "tmp"):
            (context / empty).mkdir()
        # (home and tmp are the user's: the server unpacks its static files under /tmp)
        (context / "Dockerfile").write_text(DOCKERFILE)
        engine.images.build(path=folder, tag=IMAGE, rm=True, pull=False)
    return workload_archive(engine, IMAGE)


def _answers(url: str) -> bool:
    try:
        return http_ok(url)
    except OSError:  # URLError too: nothing listens yet, or the forward is not through to the pod
        return False


@dataclass(frozen=True)
class Headlamp:
    url: str  # on loopback, through kubectl port-forward
    token: str  # the viewer's, to sign in with
    cluster: str = CLUSTER_NAME

    def pod_page(self, namespace: str, pod: str) -> str:
        return f"{self.url}/c/{self.cluster}/pods/{namespace}/{pod}"

    def events_page(self, namespace: str) -> str:
        return f"{self.url}/c/{self.cluster}/events?namespace={namespace}"


@contextlib.contextmanager
def deploy(cluster: Cluster, archive: bytes) -> Iterator[None]:
    """Load the image (`image_archive`), declare Headlamp and start the relay it reaches the API server by, without
    waiting for it to be ready; on leaving, delete what was declared and stop the relay."""
    api = cluster.api()
    cluster.load_image(archive)
    api_port = urlparse(cluster.server).port
    assert api_port is not None, cluster.server
    cluster.run_beside(
        RELAY,
        ["socat", f"TCP-LISTEN:{api_port},bind={ADVERTISE_ADDRESS},reuseaddr,fork", f"TCP:127.0.0.1:{api_port}"],
    )
    declared = objects(ADVERTISE_ADDRESS, api_port)
    try:
        for manifest in declared:
            create_or_keep(api, manifest)
        yield
    finally:
        rbac = client.RbacAuthorizationV1Api(api)
        for manifest in declared:
            if manifest["kind"] == "ClusterRoleBinding":
                with contextlib.suppress(ApiException):
                    rbac.delete_cluster_role_binding(manifest["metadata"]["name"])
        with contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(NAMESPACE)
        cluster.end(RELAY)


@contextlib.contextmanager
def reach(cluster: Cluster) -> Iterator[Headlamp]:
    """Wait for the deployed Headlamp to be ready, forward a loopback port to its Service as its docs say, and
    yield where it answers and the viewer's token; on leaving, stop the forward."""
    api = cluster.api()
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        status = as_json(api, apps.read_namespaced_deployment_status(NAME, NAMESPACE)).get("status", {})
        if status.get("readyReplicas") == 1:
            break
        time.sleep(1)
    else:
        pods = as_json(api, client.CoreV1Api(api).list_namespaced_pod(NAMESPACE))["items"]
        raise AssertionError(f"Headlamp not ready in {READY_TIMEOUT_S:.0f} s: {[p.get('status') for p in pods]}")
    port = free_port()
    forward = cluster.run_beside(
        PORT_FORWARD,
        [
            str(BIN / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "port-forward",
            f"--namespace={NAMESPACE}",
            f"service/{NAME}",
            f"{port}:80",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            log = cluster.context.processes.log_tail(PORT_FORWARD)
            assert forward.poll() is None, f"kubectl port-forward exited:\n{log}"
            assert time.monotonic() < deadline, f"Headlamp does not answer at {url} through kubectl port-forward"
            time.sleep(0.5)
        yield Headlamp(url, service_account_token(api, NAMESPACE, VIEWER, TOKEN_SECONDS))
    finally:
        cluster.end(PORT_FORWARD)
