"""A single-node Kubernetes cluster on this machine, from binaries built out of the upstream release modules.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler listen on loopback only; containerd runs pods
with Debian's runc and CNI plugins on a bridge of the cluster's own (no route out, no masquerading, no
kube-proxy); the kubelet runs them in memory cgroups under a cgroup root of the cluster's own. Everything the
cluster makes lives in one work folder, and `stop` (also `python -m tests.e2e.cluster stop DIR` from another
process) takes it all down from the state file written there: processes by pid, containers by their cgroups,
mounts, the bridge, and the kernel settings the kubelet changes.

Usage, from the project's root (python -m finds the tests package only there; `stop_command` gives the line that
works from any folder): python -m tests.e2e.cluster stop DIR (the cluster is started by make e2e; E2E_KEEP=1
leaves it up and prints that line)
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from tests.e2e import pki
from tests.servers import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("OOM_KILLER_E2E_CACHE", "/var/cache/oom-killer-ci"))
BIN = Path(os.environ.get("OOM_KILLER_E2E_BIN", str(CACHE / "bin")))
BUILD_SCRIPT = Path(__file__).resolve().parent / "builds" / "build.sh"
BINARIES = (
    "etcd",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "pause",
)
RUNC = Path("/usr/sbin/runc")
CONTAINERD_RUN = Path("/run/containerd")  # where a node's containerd keeps its socket (cAdvisor looks there)
POD_LOGS = Path("/var/log/pods")  # where a kubelet keeps its pods' logs
CNI_PLUGINS = Path("/usr/lib/cni")

NODE = "oom-killer-e2e"
CGROUP_ROOT = "oom-killer-e2e"  # the first node's kubelet's cgroupRoot: every pod's cgroups are made below it
BRIDGE = "oomk-e2e0"
NODE_IP = "10.244.0.1"  # the bridge's own address: the kubelet refuses a loopback node IP
POD_SUBNET = "10.244.0.0/24"
SERVICE_RANGE = "10.96.0.0/24"
PAUSE_IMAGE = "localhost/oom-killer-e2e/pause:1"
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for what the kubelet runs

# What the kubelet sets on start (setupKernelTunables), saved first and put back on stop.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
READY_TIMEOUT = 180.0
# The control plane's processes, in the order stop ends them (what runs beside it, then the nodes, go first).
_CONTROL_PLANE = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
# Each node's, in the order its stop ends them; their names in the state are "<node>/<part>".
_NODE_PARTS = ("kubelet", "containerd", "node-namespace")


@dataclass(frozen=True)
class NodeSpec:
    """One node made from the common recipe, as kind makes several on one host: its name and address on the
    cluster's bridge, its pods' subnet, its kubelet's cgroup root, and what makes it differ (reserved memory,
    taints)."""

    name: str
    ip: str
    pod_subnet: str
    cgroup_root: str
    system_reserved_memory: str | None = None  # the kubelet's systemReserved memory: what allocatable leaves out
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect), as the kubelet registers the node with

    def as_state(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "taints": [list(taint) for taint in self.taints]}

    @classmethod
    def from_state(cls, saved: dict[str, Any]) -> NodeSpec:
        return cls(**{**saved, "taints": tuple(tuple(taint) for taint in saved.get("taints", []))})


FIRST_NODE = NodeSpec(NODE, NODE_IP, POD_SUBNET, CGROUP_ROOT)


class ClusterError(Exception):
    """The cluster could not be built or started; the message says which part and shows its log's tail."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not (BIN / name).exists()]


def build() -> None:
    """Build (or find cached) the cluster's binaries; CI runs the same script first, to show the build's time."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(BIN)], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"building the cluster's binaries failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def _kubeconfig(path: Path, server: str, pki_dir: Path, user: str) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NODE, "cluster": {"server": server, "certificate-authority": str(pki_dir / "ca.crt")}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki_dir / f"{user}.crt"),
                    "client-key": str(pki_dir / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": NODE, "context": {"cluster": NODE, "user": user}}],
        "current-context": NODE,
    }
    path.write_text(yaml.safe_dump(document))


def _mounts_below(directory: Path) -> list[str]:
    """Mount points at or below `directory`, deepest first (the order to unmount them in)."""
    prefix = str(directory)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _cgroup_trees(root: str) -> list[Path]:
    """Every cgroup hierarchy's copy of a node's cgroup root that exists (v1 has one per controller)."""
    trees = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2") and (Path(fields[4]) / root).is_dir():
            trees.append(Path(fields[4]) / root)
    return trees


class Cluster:
    """The cluster in `workdir`: a control plane and its nodes. `start()` brings up the control plane and the first
    node, `add_node()` joins another, `stop()` takes down all it made (also after a crash, from the state file)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.logs = workdir / "logs"
        self.state_file = workdir / "state.json"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.state: dict[str, Any] = {"pids": {}, "tunables": {}, "nodes": {}}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
        self.server = str(self.state.get("server", ""))
        self.authority: pki.Authority | None = None
        self.node_images: list[bytes] = []  # archives every node has from its start (the pod sandbox's image)
        self.state.setdefault("nodes", {})
        self.nodes = {name: Node(self, NodeSpec.from_state(saved)) for name, saved in self.state["nodes"].items()}

    # -- bookkeeping ------------------------------------------------------------------------------------------

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name.replace('/', '-')}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # not in the test's process group: a Ctrl-C reaches only the tests
            )
        self.state["pids"][name] = process.pid
        self._save()
        return process

    def run_beside(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start a process that serves the cluster from outside it (kube-state-metrics, Prometheus), logged to
        logs/NAME.log and recorded in the state file, so that `stop` ends it too, even after a crash."""
        return self._spawn(name, argv)

    def end(self, name: str) -> None:
        """Stop a process started by run_beside (SIGTERM, then SIGKILL after 10 s)."""
        _terminate(self.state["pids"].pop(name, None))
        self._save()

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.logs / f"{name.replace('/', '-')}.log"
        if not path.exists():
            return f"({name} wrote no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, ready: Any, timeout: float = 60.0) -> None:
        """Poll `ready()` until true; fail with the component's log if its process died or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.state["pids"].get(name)
            if pid is not None and not _alive(pid):
                raise ClusterError(f"{name} exited while starting:\n{self.log_tail(name)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.5)
        raise ClusterError(f"{name} was not ready after {timeout:.0f} s:\n{self.log_tail(name)}")

    # -- start ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise ClusterError(f"not built: {', '.join(missing)} in {BIN} (tests/e2e/builds/build.sh builds them)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state["workdir"] = str(self.workdir)
        self._save()
        self._certificates()
        self._network()
        self._etcd()
        self._apiserver()
        self._controllers()
        self.add_node(FIRST_NODE)

    def add_node(self, spec: NodeSpec) -> Node:
        """Join a node made from the common recipe (its own containerd and kubelet, root folders, cgroup root and
        mount namespace; its address on the bridge); it registers itself with the API server."""
        if spec.name in self.nodes:
            raise ClusterError(f"node {spec.name} is already in the cluster")
        node = Node(self, spec)
        self.nodes[spec.name] = node
        self.state["nodes"][spec.name] = spec.as_state()
        self._save()
        node.start()
        for archive in self.node_images:
            node.load_image(archive)
        return node

    def remove_node(self, name: str) -> list[str]:
        """Stop a node and delete it from the API server (as `kind delete node` would); what could not be undone."""
        from kubernetes import client  # only where a cluster runs

        problems = self.nodes.pop(name).stop()
        self.state["nodes"].pop(name, None)
        self._save()
        with contextlib.suppress(Exception):
            client.CoreV1Api(self.api()).delete_node(name)
        return problems

    @property
    def first(self) -> Node:
        return self.nodes[NODE]

    def _certificates(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self.authority = authority = pki.Authority(self.pki)
        authority.issue(
            "apiserver",
            "kube-apiserver",
            server_names=("127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default.svc", NODE_IP),
        )
        authority.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        authority.issue("admin", "oom-killer-e2e-admin", "system:masters")
        authority.issue("controller-manager", "system:kube-controller-manager")
        authority.issue("scheduler", "system:kube-scheduler")
        pki.service_account_key(self.pki)

    def _network(self) -> None:
        """The pods' bridge, with the first node's address on it; no route out of it, no NAT."""
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        self.state["bridge"] = BRIDGE
        self._save()
        subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)

    def _etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(BIN / "etcd"),
                "--name",
                NODE,
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"{NODE}=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # a throwaway store: fsync only slows the test
            ],
        )
        self._wait("etcd", lambda: http_ok(f"{self.etcd_url}/health"))

    def _apiserver(self) -> None:
        port = int(self.state.get("apiserver_port") or free_port())  # a restarted server keeps its address
        self.state["apiserver_port"] = port
        self.server = f"https://127.0.0.1:{port}"
        self.state["server"] = self.server
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--advertise-address={NODE_IP}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
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
            ],
        )
        _kubeconfig(self.kubeconfig, self.server, p, "admin")
        self._wait("kube-apiserver", lambda: http_ok(f"{self.server}/readyz", p), timeout=90)

    def _controllers(self) -> None:
        p = self.pki
        for user in ("controller-manager", "scheduler"):
            _kubeconfig(self.workdir / f"{user}.kubeconfig", self.server, p, user)
        self._spawn(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    # -- what the tests use -----------------------------------------------------------------------------------

    def stop_apiserver(self) -> None:
        """Kill kube-apiserver alone, as a control plane's crash does (SIGKILL: no graceful drain, so no request in
        flight gets through): etcd, the controllers and the nodes run on, and every client's requests fail until
        `start_apiserver()`."""
        _terminate(self.state["pids"].pop("kube-apiserver", None), grace=0.0)
        self._save()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again, at its address, on the same etcd."""
        self._apiserver()

    def trust_registry(self, address: str) -> None:
        """Let every node pull from a plain-HTTP registry at `address` (host:port), as a hosts.toml says it."""
        for node in self.nodes.values():
            node.trust_registry(address)

    def load_image(self, archive: bytes) -> None:
        """Import a `docker save` archive into every node, as `kind load docker-image` does."""
        for node in self.nodes.values():
            node.load_image(archive)

    def ctr(self, *args: str, stdin: bytes | None = None) -> bytes:
        """ctr against the first node's containerd."""
        return self.first.ctr(*args, stdin=stdin)

    def api(self) -> Any:
        """A Kubernetes API client as the admin (system:masters), from the cluster's kubeconfig."""
        from kubernetes import config  # only where a cluster runs

        return config.new_client_from_config(str(self.kubeconfig))

    def node(self, name: str = NODE) -> dict[str, Any]:
        """A node object (the first node's by default) as the API's JSON."""
        from kubernetes import client  # only where a cluster runs

        api = self.api()
        return as_json(api, client.CoreV1Api(api).read_node(name))

    def node_ready(self, name: str = NODE) -> bool:
        conditions = self.node(name).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout: float = READY_TIMEOUT, name: str = NODE) -> None:
        self._wait(f"{name}/kubelet", lambda: self.node_ready(name), timeout=timeout)

    def kubelets(self) -> list[str]:
        """Each node's kubelet as host:port (its metrics and cAdvisor endpoints, over TLS)."""
        return [f"{node.spec.ip}:{node.kubelet_port}" for node in self.nodes.values()]

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Take down all the cluster made; return what could not be (empty when the machine is as it was)."""
        problems: list[str] = []
        pids: dict[str, int] = self.state.get("pids", {})
        beside = [name for name in pids if name not in _CONTROL_PLANE and name.partition("/")[0] not in self.nodes]
        for name in beside:  # what ran beside the cluster, first
            _terminate(pids.pop(name))
        for node in list(self.nodes.values()):
            problems += node.stop()
        for name in _CONTROL_PLANE:
            _terminate(pids.pop(name, None))
        for point in _mounts_below(self.workdir):
            result = subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
            if result.returncode != 0:
                problems.append(f"umount {point}: {result.stderr.decode().strip()}")
        if self.state.pop("bridge", None):
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        for tunable, value in self.state.get("tunables", {}).items():
            Path("/proc/sys", tunable).write_text(value)
        self.state["tunables"] = {}
        for target in (CONTAINERD_RUN, POD_LOGS):
            if self.state.pop(_made_key(target), False):
                with contextlib.suppress(OSError):
                    target.rmdir()
        self._save()
        left = [pid for pid in _processes_with(str(BIN)) if _alive(pid)]
        if left:
            problems.append(f"processes still running from {BIN}: {left}")
        return problems


class Node:
    """One node of the cluster: its containerd and kubelet in a mount namespace of their own, its folders under
    nodes/<name>, its kubelet's cgroup root, its address on the bridge; started, stopped (and so restarted) alone."""

    def __init__(self, cluster: Cluster, spec: NodeSpec) -> None:
        self.cluster = cluster
        self.spec = spec
        self.dir = cluster.workdir / "nodes" / spec.name
        self.containerd_socket = self.dir / "containerd" / "containerd.sock"

    def _pid(self, part: str) -> str:
        return f"{self.spec.name}/{part}"

    @property
    def kubelet_port(self) -> int:
        return int(self.cluster.state["nodes"][self.spec.name]["kubelet_port"])

    def start(self) -> None:
        self._certificate()
        subprocess.run(["ip", "addr", "replace", f"{self.spec.ip}/24", "dev", BRIDGE], check=True)
        self._namespace()
        self._containerd()
        self._kubelet()

    def _certificate(self) -> None:
        authority = self.cluster.authority
        if authority is None:
            raise ClusterError("the cluster's certificate authority is not loaded (start the cluster first)")
        name = self.spec.name
        authority.issue(
            f"kubelet-{name}", f"system:node:{name}", "system:nodes", server_names=(self.spec.ip, "127.0.0.1", name)
        )

    def _namespace(self) -> None:
        """A mount namespace for the node's agents (containerd and the kubelet, and so the shims and pods) in
        which /run/containerd is the node's own folder, with containerd's socket where cAdvisor, built into the
        kubelet, looks for it: cAdvisor dials /run/containerd/containerd.sock and no kubelet flag or setting
        changes that (cadvisor's `--containerd` flag is not the kubelet's). Without it cAdvisor learns no
        container from the runtime, and its series carry empty `container`, `pod` and `namespace` labels. A user's
        node (kubeadm, kind, the clouds' images) runs containerd at that very path. In a namespace of its own, a
        containerd the machine runs there already is neither used nor touched, and two nodes do not meet (as each
        kind node has its own). /var/log/pods is the node's own too: a kubelet removes the log folders of pods it
        does not know, which on a shared folder would be the other node's."""
        run, pod_logs = self.dir / "run-containerd", self.dir / "pod-logs"
        for folder in (run, pod_logs):
            folder.mkdir(parents=True, exist_ok=True)
        socket_link = run / "containerd.sock"
        if not socket_link.is_symlink():
            socket_link.symlink_to(self.containerd_socket)  # connect() follows it: the grpc address stays ours
        for target in (CONTAINERD_RUN, POD_LOGS):
            if not target.exists():  # the bind mounts' targets on the machine; removed on stop if made here
                target.mkdir(parents=True)
                self.cluster.state[_made_key(target)] = True
        holder = self.cluster._spawn(
            self._pid("node-namespace"), ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"]
        )
        self.cluster._wait(
            self._pid("node-namespace"), lambda: _mount_namespace(holder.pid) != _mount_namespace(os.getpid()), 10
        )
        for source, target in ((run, CONTAINERD_RUN), (pod_logs, POD_LOGS)):
            subprocess.run(self.in_namespace(["mount", "--bind", str(source), str(target)]), check=True)

    def in_namespace(self, argv: list[str]) -> list[str]:
        holder = self.cluster.state["pids"][self._pid("node-namespace")]
        return ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--", *argv]

    def _containerd(self) -> None:
        root = self.dir / "containerd"
        (root / "cni").mkdir(parents=True, exist_ok=True)
        subnet = ipaddress.ip_network(self.spec.pod_subnet)
        network = {
            "cniVersion": "1.0.0",
            "name": "oom-killer-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(subnet), "rangeStart": str(subnet.network_address + 10)}]],
                        "dataDir": str(root / "ipam"),
                    },
                }
            ],
        }
        (root / "cni" / "10-oom-killer-e2e.conflist").write_text(json.dumps(network, indent=2))
        config = f"""
version = 3
root = "{root / "root"}"
state = "{root / "state"}"

[grpc]
  address = "{self.containerd_socket}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{root / "certs.d"}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj, and runc fails every pod
  # ("failed to update /proc/self/oom_score_adj: Permission denied": the kubelet asks -998 for a sandbox, -997
  # for a Guaranteed container). Clamp them at containerd's own, as rootless setups do.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{CNI_PLUGINS}"]
    conf_dir = "{root / "cni"}"

[plugins.'io.containerd.internal.v1.opt']
  path = "{root / "opt"}"
"""
        (root / "config.toml").write_text(config)
        self.cluster.state["nodes"][self.spec.name]["containerd_socket"] = str(self.containerd_socket)
        self.cluster._spawn(
            self._pid("containerd"),
            self.in_namespace([str(BIN / "containerd"), "--config", str(root / "config.toml")]),
            # The shim is found on PATH, next to containerd; runc is named in the config.
            env={"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"},
        )
        self.cluster._wait(self._pid("containerd"), lambda: self.ctr("version") is not None)

    def ctr(self, *args: str, stdin: bytes | None = None) -> bytes:
        result = subprocess.run(
            [str(BIN / "ctr"), "--address", str(self.containerd_socket), "--namespace", K8S_NAMESPACE, *args],
            input=stdin,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    def trust_registry(self, address: str) -> None:
        """Let the node pull from a plain-HTTP registry at `address` (host:port), as a hosts.toml says it.

        containerd reads these files at each pull, so a registry can be added to a running node.
        """
        hosts = self.dir / "containerd" / "certs.d" / address
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{address}"\n\n[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def load_image(self, archive: bytes) -> None:
        """Import a `docker save` archive into the kubelet's namespace, as `kind load docker-image` does."""
        self.ctr("images", "import", "--all-platforms", "-", stdin=archive)

    def _kubelet(self) -> None:
        cluster = self.cluster
        saved = cluster.state["nodes"][self.spec.name]  # a restarted kubelet keeps its ports (Prometheus scrapes one)
        for tunable in KERNEL_TUNABLES:
            cluster.state["tunables"].setdefault(tunable, Path("/proc/sys", tunable).read_text().strip())
        self._make_cgroup_root()
        cluster._save()
        kubelet_dir = self.dir / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.dir / "kubelet.kubeconfig"
        _kubeconfig(kubeconfig, cluster.server, cluster.pki, f"kubelet-{self.spec.name}")
        credentials = cluster.pki / f"kubelet-{self.spec.name}"
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine's memory controller is on cgroup v1; from 1.35 the kubelet refuses v1 unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",  # no systemd here
            "cgroupRoot": f"/{self.spec.cgroup_root}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.spec.ip,
            "port": saved.get("kubelet_port") or free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": saved.get("healthz_port") or free_port(),
            "tlsCertFile": f"{credentials}.crt",
            "tlsPrivateKeyFile": f"{credentials}.key",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cluster.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "staticPodPath": "",
            "resolvConf": "/etc/resolv.conf",
            "failSwapOn": False,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "registerWithTaints": [{"key": k, "value": v, "effect": e} for k, v, e in self.spec.taints],
        }
        if self.spec.system_reserved_memory:
            config["systemReserved"] = {"memory": self.spec.system_reserved_memory}
        (kubelet_dir / "config.yaml").write_text(yaml.safe_dump(config))
        saved["kubelet_port"], saved["healthz_port"] = config["port"], config["healthzPort"]
        cluster._save()
        cluster._spawn(
            self._pid("kubelet"),
            self.in_namespace(
                [
                    str(BIN / "kubelet"),
                    f"--config={kubelet_dir / 'config.yaml'}",
                    f"--kubeconfig={kubeconfig}",
                    f"--root-dir={kubelet_dir / 'root'}",
                    f"--cert-dir={kubelet_dir / 'pki'}",
                    f"--hostname-override={self.spec.name}",
                    f"--node-ip={self.spec.ip}",
                    "--v=1",
                ]
            ),
            env={"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"},
        )

    def _make_cgroup_root(self) -> None:
        """The kubelet's cgroupRoot in every v1 hierarchy (it must exist); a new cpuset takes its parent's cpus."""
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[fields.index("-") + 1] != "cgroup":
                continue
            tree = Path(fields[4]) / self.spec.cgroup_root
            tree.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (tree / name).exists() and not (tree / name).read_text().strip():
                    (tree / name).write_text((tree.parent / name).read_text())

    def restart(self, part: str) -> None:
        """Stop the node's kubelet or containerd and start it again as it was, as systemd restarts a node's agent
        after an upgrade or a crash: the pods, their shims and their processes live on (containerd's shims keep the
        containers; the kubelet finds its pods again)."""
        if part not in ("kubelet", "containerd"):
            raise ClusterError(f"no {part} to restart on a node: kubelet or containerd")
        _terminate(self.cluster.state["pids"].pop(self._pid(part), None))
        self.cluster._save()
        if part == "kubelet":
            self._kubelet()
        else:
            self._containerd()

    def stop(self) -> list[str]:
        """Take the node down: its kubelet, then its containers (by the cgroups they run in: they outlive the kubelet
        and their shims), shims, containerd, and its mount namespace (the containers' mounts go with its last
        process); its cgroups and its address on the bridge. What could not be undone."""
        problems: list[str] = []
        pids: dict[str, int] = self.cluster.state.get("pids", {})
        _terminate(pids.pop(self._pid("kubelet"), None))
        for tree in _cgroup_trees(self.spec.cgroup_root):
            for procs in tree.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for shim in _processes_with(f"containerd-shim-runc-v2 -namespace {K8S_NAMESPACE}", str(self.containerd_socket)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(shim, signal.SIGKILL)
        for part in ("containerd", "node-namespace"):
            _terminate(pids.pop(self._pid(part), None))
        for tree in _cgroup_trees(self.spec.cgroup_root):
            for directory in sorted((d for d in tree.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                _rmdir_cgroup(directory)
            if not _rmdir_cgroup(tree):
                problems.append(f"cgroup {tree} is still there")
        subprocess.run(["ip", "addr", "del", f"{self.spec.ip}/24", "dev", BRIDGE], capture_output=True, check=False)
        self.cluster._save()
        return problems


def as_json(api: Any, model: object) -> dict[str, Any]:
    """A client model as the API's own JSON (camelCase keys), to read without a None check at every level."""
    return cast(dict[str, Any], api.sanitize_for_serialization(model))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0): look at its state.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _terminate(pid: int | None, grace: float = 10.0) -> None:
    if pid is None or not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _processes_with(*needles: str | None) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if all(needle is None or needle in command for needle in needles):
                yield int(entry.name)


def _made_key(path: Path) -> str:
    """The state's note that the cluster made this folder on the machine (and removes it on stop, when empty)."""
    return f"made {path}"


def _mount_namespace(pid: int) -> str:
    return str(Path(f"/proc/{pid}/ns/mnt").readlink())


def _rmdir_cgroup(directory: Path) -> bool:
    for _ in range(50):
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.1)  # its last processes are still exiting
    return False


def http_ok(url: str, pki_dir: Path | None = None) -> bool:

    context = None
    if pki_dir is not None:
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 (our own servers, https or http)
        return bool(response.status == 200)


def stop_command(workdir: Path) -> str:
    """The shell line that stops the cluster in `workdir` from any folder: `python -m tests.e2e.cluster` finds the
    tests package only from the project's root, so the line goes there first (with this very interpreter)."""
    module = f"{shlex.quote(sys.executable)} -m tests.e2e.cluster stop {shlex.quote(str(workdir.resolve()))}"
    return f"cd {shlex.quote(str(PROJECT_DIR))} && {module}"


def main(argv: list[str]) -> int:
    """`stop DIR`: take down a cluster that `make e2e E2E_KEEP=1` left running (it prints this command)."""
    if len(argv) == 2 and argv[0] == "stop":
        problems = Cluster(Path(argv[1])).stop()
        for problem in problems:
            print(f"e2e stop: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print(f"usage: cd {shlex.quote(str(PROJECT_DIR))} && python -m tests.e2e.cluster stop DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
