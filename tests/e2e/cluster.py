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
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import yaml

from tests.e2e import pki

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
CNI_PLUGINS = Path("/usr/lib/cni")

NODE = "oom-killer-e2e"
CGROUP_ROOT = "oom-killer-e2e"  # the kubelet's cgroupRoot: every pod's cgroups are made below it
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
# The cluster's own processes, in the order stop ends them (what runs beside it goes before all of them).
_PARTS = (
    "kubelet",
    "containerd",
    "node-namespace",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


class ClusterError(Exception):
    """The cluster could not be built or started; the message says which part and shows its log's tail."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not (BIN / name).exists()]


def build() -> None:
    """Build (or find cached) the cluster's binaries; CI runs the same script first, to show the build's time."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(BIN)], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"building the cluster's binaries failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def _cgroup_trees() -> list[Path]:
    """Every cgroup hierarchy's copy of the cluster's cgroup root that exists (v1 has one per controller)."""
    trees = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2") and (Path(fields[4]) / CGROUP_ROOT).is_dir():
            trees.append(Path(fields[4]) / CGROUP_ROOT)
    return trees


class Cluster:
    """The cluster in `workdir`; `start()` brings it up, `stop()` takes down all it made (also after a crash)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.logs = workdir / "logs"
        self.state_file = workdir / "state.json"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.containerd_socket = workdir / "containerd" / "containerd.sock"
        self.state: dict[str, Any] = {"pids": {}, "tunables": {}}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

    # -- bookkeeping ------------------------------------------------------------------------------------------

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
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
        path = self.logs / f"{name}.log"
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
        self._node_namespace()
        self._containerd()
        self._kubelet()

    def _certificates(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        authority = pki.Authority(self.pki)
        authority.issue(
            "apiserver",
            "kube-apiserver",
            server_names=("127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default.svc", NODE_IP),
        )
        authority.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        authority.issue("admin", "oom-killer-e2e-admin", "system:masters")
        authority.issue("controller-manager", "system:kube-controller-manager")
        authority.issue("scheduler", "system:kube-scheduler")
        authority.issue("kubelet", f"system:node:{NODE}", "system:nodes", server_names=(NODE_IP, "127.0.0.1", NODE))
        pki.service_account_key(self.pki)

    def _network(self) -> None:
        """The pods' bridge, with the node's address on it; no route out of it, no NAT."""
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        self.state["bridge"] = BRIDGE
        self._save()
        subprocess.run(["ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE], check=True)
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
        self._wait("etcd", lambda: _http_ok(f"{self.etcd_url}/health"))

    def _apiserver(self) -> None:
        port = free_port()
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
        self._wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", p), timeout=90)

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

    def _node_namespace(self) -> None:
        """A mount namespace for the node's agents (containerd and the kubelet, and so the shims and pods) in
        which /run/containerd is the node's own folder, with containerd's socket where cAdvisor, built into the
        kubelet, looks for it: cAdvisor dials /run/containerd/containerd.sock and no kubelet flag or setting
        changes that (cadvisor's `--containerd` flag is not the kubelet's). Without it cAdvisor learns no
        container from the runtime, and its series carry empty `container`, `pod` and `namespace` labels. A user's
        node (kubeadm, kind, the clouds' images) runs containerd at that very path. In a namespace of its own, a
        containerd the machine runs there already is neither used nor touched (as each kind node has its own)."""
        run = self.workdir / "run-containerd"
        run.mkdir(parents=True, exist_ok=True)
        socket_link = run / "containerd.sock"
        if not socket_link.is_symlink():
            socket_link.symlink_to(self.containerd_socket)  # connect() follows it: the grpc address stays ours
        if not CONTAINERD_RUN.exists():  # the bind mount's target on the machine; removed on stop if made here
            CONTAINERD_RUN.mkdir(parents=True)
            self.state["made_containerd_run"] = True
        holder = self._spawn("node-namespace", ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        self._wait("node-namespace", lambda: _mount_namespace(holder.pid) != _mount_namespace(os.getpid()), 10)
        subprocess.run(self._in_node_namespace(["mount", "--bind", str(run), str(CONTAINERD_RUN)]), check=True)

    def _in_node_namespace(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.state['pids']['node-namespace']}/ns/mnt", "--", *argv]

    def _containerd(self) -> None:
        root = self.workdir / "containerd"
        (root / "cni").mkdir(parents=True, exist_ok=True)
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
                        "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.244.0.10"}]],
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
        self.state["containerd_socket"] = str(self.containerd_socket)
        self._spawn(
            "containerd",
            self._in_node_namespace([str(BIN / "containerd"), "--config", str(root / "config.toml")]),
            # The shim is found on PATH, next to containerd; runc is named in the config.
            env={"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"},
        )
        self._wait("containerd", lambda: self.ctr("version") is not None)

    def trust_registry(self, address: str) -> None:
        """Let the node pull from a plain-HTTP registry at `address` (host:port), as a hosts.toml says it.

        containerd reads these files at each pull, so a registry can be added to a running node.
        """
        hosts = self.workdir / "containerd" / "certs.d" / address
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{address}"\n\n[host."http://{address}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def load_image(self, archive: bytes) -> None:
        """Import a `docker save` archive into the kubelet's namespace, as `kind load docker-image` does."""
        self.ctr("images", "import", "--all-platforms", "-", stdin=archive)

    def _kubelet(self) -> None:
        for tunable in KERNEL_TUNABLES:
            self.state["tunables"].setdefault(tunable, Path("/proc/sys", tunable).read_text().strip())
        self._make_cgroup_root()
        self._save()
        kubelet_dir = self.workdir / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        _kubeconfig(self.workdir / "kubelet.kubeconfig", self.server, self.pki, "kubelet")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine's memory controller is on cgroup v1; from 1.35 the kubelet refuses v1 unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",  # no systemd here
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(self.pki / "kubelet.crt"),
            "tlsPrivateKeyFile": str(self.pki / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
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
        }
        (kubelet_dir / "config.yaml").write_text(yaml.safe_dump(config))
        self.state["kubelet_port"] = config["port"]
        self._spawn(
            "kubelet",
            self._in_node_namespace(
                [
                    str(BIN / "kubelet"),
                    f"--config={kubelet_dir / 'config.yaml'}",
                    f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
                    f"--root-dir={kubelet_dir / 'root'}",
                    f"--cert-dir={kubelet_dir / 'pki'}",
                    f"--hostname-override={NODE}",
                    f"--node-ip={NODE_IP}",
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
            tree = Path(fields[4]) / CGROUP_ROOT
            tree.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (tree / name).exists() and not (tree / name).read_text().strip():
                    (tree / name).write_text((tree.parent / name).read_text())

    def api(self) -> Any:
        """A Kubernetes API client as the admin (system:masters), from the cluster's kubeconfig."""
        from kubernetes import config  # only where a cluster runs

        return config.new_client_from_config(str(self.kubeconfig))

    def node(self) -> dict[str, Any]:
        """The node object as the API's JSON."""
        from kubernetes import client  # only where a cluster runs

        api = self.api()
        return as_json(api, client.CoreV1Api(api).read_node(NODE))

    def node_ready(self) -> bool:
        conditions = self.node().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self._wait("kubelet", self.node_ready, timeout=timeout)

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Take down all the cluster made; return what could not be (empty when the machine is as it was)."""
        problems: list[str] = []
        pids: dict[str, int] = self.state.get("pids", {})
        for name in [name for name in pids if name not in _PARTS]:  # what ran beside the cluster, first
            _terminate(pids.pop(name))
        _terminate(pids.pop("kubelet", None))
        # The containers outlive the kubelet and their shims: kill them by the cgroups they run in.
        for tree in _cgroup_trees():
            for procs in tree.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        socket_path = self.state.get("containerd_socket")
        for shim in _processes_with(f"containerd-shim-runc-v2 -namespace {K8S_NAMESPACE}", socket_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(shim, signal.SIGKILL)
        # The node's mount namespace (its containers' mounts with it) goes with its last process.
        for name in _PARTS[1:]:
            _terminate(pids.pop(name, None))
        if self.state.pop("made_containerd_run", False):
            with contextlib.suppress(OSError):
                CONTAINERD_RUN.rmdir()
        for tree in _cgroup_trees():
            for directory in sorted((d for d in tree.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                _rmdir_cgroup(directory)
            if not _rmdir_cgroup(tree):
                problems.append(f"cgroup {tree} is still there")
        for point in _mounts_below(self.workdir):
            result = subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
            if result.returncode != 0:
                problems.append(f"umount {point}: {result.stderr.decode().strip()}")
        if self.state.pop("bridge", None):
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        for tunable, value in self.state.get("tunables", {}).items():
            Path("/proc/sys", tunable).write_text(value)
        self.state["tunables"] = {}
        self._save()
        left = [pid for pid in _processes_with(str(BIN)) if _alive(pid)]
        if left:
            problems.append(f"processes still running from {BIN}: {left}")
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
        os.kill(pid, signal.SIGTERM)
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


def _http_ok(url: str, pki_dir: Path | None = None) -> bool:

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
