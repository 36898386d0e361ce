"""The control plane as a list of steps sharing one context, as kind's create actions share theirs: certificates,
the bridge, etcd, kube-apiserver, the controller manager and the scheduler, all on loopback.

A step saves in the state file what a later step, a restart or `stop` needs (the API server's port and address,
etcd's address), so that a cluster loaded from the file (`stop DIR`, a restarted API server) finds them.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import pki
from tests.e2e.harness import host
from tests.e2e.harness.state import BIN, ClusterError, Processes, State
from tests.e2e.pki import Authority
from tests.servers import free_port

CLUSTER_NAME = "oom-killer-e2e"
SERVICE_RANGE = "10.96.0.0/24"
ADVERTISE_ADDRESS = host.node_address(0)[0]  # the first node's address: the API server's own on the bridge
# The control plane's processes, in the order stop ends them (what runs beside it, then the nodes, go first).
PROCESSES = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


@dataclass
class Context:
    """What the steps, the nodes and the façade share: the cluster's folder, its state file and processes, and its
    certificate authority (loaded by the first step; None in a cluster loaded only to be stopped)."""

    workdir: Path
    state: State
    processes: Processes
    authority: Authority | None = None

    @classmethod
    def of(cls, workdir: Path) -> Context:
        """The context of the cluster in `workdir`, from its state file where there is one."""
        state = State(workdir / "state.json")
        return cls(workdir, state, Processes(state, workdir / "logs"))

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return str(self.state.get("server") or "")

    @property
    def etcd_url(self) -> str:
        return str(self.state.get("etcd_url") or "")

    def issuer(self) -> Authority:
        if self.authority is None:
            raise ClusterError("the cluster's certificate authority is not loaded (start the cluster first)")
        return self.authority


def write_kubeconfig(path: Path, server: str, pki_dir: Path, user: str, token: str | None = None) -> None:
    """A kubeconfig for `user`: by the client certificate the authority issued it, or by a bearer `token` (a
    ServiceAccount's, service_account_token())."""
    credential = (
        {"token": token}
        if token is not None
        else {"client-certificate": str(pki_dir / f"{user}.crt"), "client-key": str(pki_dir / f"{user}.key")}
    )
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority": str(pki_dir / "ca.crt")}}
        ],
        "users": [{"name": user, "user": credential}],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }
    path.write_text(yaml.safe_dump(document))


def service_account_token(api: Any, namespace: str, account: str, seconds: int) -> str:
    """A token of the ServiceAccount (a TokenRequest of `seconds`), as a pod of that account is given one."""
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(account, namespace, request)
    assert answer.status is not None, "the TokenRequest gave no token"
    return str(answer.status.token)


def http_ok(url: str, pki_dir: Path | None = None) -> bool:
    """Whether `url` answers 200 (over TLS as the admin, with the cluster's CA, when `pki_dir` is given)."""
    context = None
    if pki_dir is not None:
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 (our own servers, https or http)
        return bool(response.status == 200)


# -- the steps ----------------------------------------------------------------------------------------------------


def certificates(context: Context) -> None:
    context.pki.mkdir(parents=True, exist_ok=True)
    context.authority = authority = pki.Authority(context.pki)
    authority.issue(
        "apiserver",
        "kube-apiserver",
        server_names=(
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default.svc",
            ADVERTISE_ADDRESS,
        ),
    )
    authority.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
    authority.issue("admin", "oom-killer-e2e-admin", "system:masters")
    authority.issue("controller-manager", "system:kube-controller-manager")
    authority.issue("scheduler", "system:kube-scheduler")
    # The aggregation layer, as kubeadm sets it up: the API server proxies /apis/metrics.k8s.io to metrics-server as
    # the front-proxy client, whose CA metrics-server trusts for the user it names; metrics-server serves with a
    # certificate for its Service's name, which the APIService's caBundle (this CA) checks.
    front_proxy = pki.Authority(context.pki, "front-proxy-ca", "oom-killer-e2e-front-proxy-ca")
    front_proxy.issue("front-proxy-client", "front-proxy-client")
    authority.issue("metrics-server", "metrics-server", server_names=("metrics-server.kube-system.svc",))
    pki.service_account_key(context.pki)


def bridge(context: Context) -> None:
    """The pods' bridge; each node puts its own address on it when it joins."""
    host.make_bridge(context.state)


def etcd(context: Context) -> None:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    context.state.set("etcd_url", url)  # the API server, restarted, finds it here
    context.processes.spawn(
        "etcd",
        [
            str(BIN / "etcd"),
            "--name",
            CLUSTER_NAME,
            "--data-dir",
            str(context.workdir / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"{CLUSTER_NAME}=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a throwaway store: fsync only slows the test
        ],
    )
    context.processes.wait("etcd", lambda: http_ok(f"{url}/health"))


def apiserver(context: Context) -> None:
    """kube-apiserver on etcd; started again (`Cluster.start_apiserver`) it keeps its port, so its address."""
    state = context.state
    port = int(state.get("apiserver_port") or free_port())
    state.set("apiserver_port", port)
    state.set("server", f"https://127.0.0.1:{port}")
    p = context.pki
    context.processes.spawn(
        "kube-apiserver",
        [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers={context.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            f"--cert-dir={context.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # Privileged containers are allowed by the server, so that a refusal can only be Pod Security's.
            "--allow-privileged=true",
            "--profiling=false",
            # The aggregation layer (kubeadm's values): who may name the user in headers, and the client
            # certificate the API server proxies to an extension API server (metrics-server) with.
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            # No kube-proxy here, so no Service IP routes anywhere: the API server reaches an APIService's Service
            # at its endpoint's address (without this the APIService stays FailedDiscoveryCheck).
            "--enable-aggregator-routing=true",
        ],
    )
    write_kubeconfig(context.kubeconfig, context.server, p, "admin")
    context.processes.wait("kube-apiserver", lambda: http_ok(f"{context.server}/readyz", p), timeout=90)


def _controller(context: Context, name: str, user: str, flags: list[str]) -> None:
    """A controller of the control plane's, as its own user (kubeconfig), on a loopback port of its own."""
    kubeconfig = context.workdir / f"{user}.kubeconfig"
    write_kubeconfig(kubeconfig, context.server, context.pki, user)
    context.processes.spawn(
        name,
        [
            str(BIN / name),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={context.workdir / f'{user}-certs'}",
            *flags,
            "--leader-elect=false",
            "--profiling=false",
        ],
    )


def controllers(context: Context) -> None:
    p = context.pki
    _controller(
        context,
        "kube-controller-manager",
        "controller-manager",
        [
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=true",
        ],
    )
    _controller(context, "kube-scheduler", "scheduler", [])


STEPS: tuple[Callable[[Context], None], ...] = (certificates, bridge, etcd, apiserver, controllers)
