"""Nodes from one recipe, as kind makes several on one host: each its own containerd and kubelet in a mount
namespace of its own, folders under nodes/<name>, kubelet cgroup root, address on the bridge and pods' subnet
(handed out by the harness), started, stopped and restarted alone."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import host
from tests.e2e.harness.control_plane import Context, write_kubeconfig
from tests.e2e.harness.state import BIN, ClusterError, kill, processes_with
from tests.servers import free_port

RUNC = Path("/usr/sbin/runc")
CNI_PLUGINS = Path("/usr/lib/cni")
CONTAINERD_RUN = Path("/run/containerd")  # where a node's containerd keeps its socket (cAdvisor looks there)
POD_LOGS = Path("/var/log/pods")  # where a kubelet keeps its pods' logs
PAUSE_IMAGE = "localhost/oom-killer-e2e/pause:1"
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for what the kubelet runs
EVICTION_HARD_MIB = 100  # the kubelet's evictionHard memory.available: allocatable leaves it out too
# The agents of a node, in the order its stop ends them; their names in the state are "<node>/<part>".
PARTS = ("kubelet", "containerd", "node-namespace")


def kubelet_settings(client_ca_file: str) -> dict[str, Any]:
    """What every node's kubelet is configured with, here or in a VM (v2node/node.py): clients by certificate of the
    cluster's CA or by token (webhook), no swap check, images never collected, the eviction threshold allocatable
    leaves out, and 5 s syncs."""
    return {
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": client_ca_file},
        },
        "authorization": {"mode": "Webhook"},
        "resolvConf": "/etc/resolv.conf",
        "failSwapOn": False,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": f"{EVICTION_HARD_MIB}Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
    }


@dataclass(frozen=True)
class NodeSpec:
    """One node: its name and address on the cluster's bridge, its pods' subnet, its kubelet's cgroup root, and
    what makes it differ (reserved memory, taints)."""

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
        """The spec from a node's record in the state file, which holds the node's own keys beside it (its
        kubelet's ports, its containerd's socket)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        spec = {key: value for key, value in saved.items() if key in fields}
        return cls(**{**spec, "taints": tuple(tuple(taint) for taint in saved.get("taints", []))})


def free_address(taken: list[NodeSpec]) -> tuple[str, str]:
    """The first node address and pods' subnet no node in `taken` has."""
    used = {spec.ip for spec in taken}
    index = 0
    while host.node_address(index)[0] in used:
        index += 1
    return host.node_address(index)


class Node:
    """One node of the cluster: its containerd and kubelet in a mount namespace of their own, its folders under
    nodes/<name>, its kubelet's cgroup root, its address on the bridge; started, stopped (and so restarted) alone.
    Its record in the state file is its spec and its kubelet's ports."""

    def __init__(self, context: Context, spec: NodeSpec) -> None:
        self.context = context
        self.spec = spec
        self.dir = context.workdir / "nodes" / spec.name
        self.containerd_socket = self.dir / "containerd" / "containerd.sock"

    @property
    def _record(self) -> dict[str, Any]:
        return self.context.state.nodes[self.spec.name]

    def _pid(self, part: str) -> str:
        return f"{self.spec.name}/{part}"

    @property
    def kubelet_port(self) -> int:
        return int(self._record["kubelet_port"])

    def start(self) -> None:
        self.context.issuer().issue(
            f"kubelet-{self.spec.name}",
            f"system:node:{self.spec.name}",
            "system:nodes",
            server_names=(self.spec.ip, "127.0.0.1", self.spec.name),
        )
        host.add_address(self.spec.ip)
        self._namespace()
        self._containerd()
        self._kubelet()

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
            host.make_folder(self.context.state, target)  # the bind mounts' targets on the machine
        processes = self.context.processes
        holder = processes.spawn(
            self._pid("node-namespace"), ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"]
        )
        processes.wait(
            self._pid("node-namespace"),
            lambda: host.mount_namespace(holder.pid) != host.mount_namespace(os.getpid()),
            10,
        )
        for source, target in ((run, CONTAINERD_RUN), (pod_logs, POD_LOGS)):
            subprocess.run(self.in_namespace(["mount", "--bind", str(source), str(target)]), check=True)

    def in_namespace(self, argv: list[str]) -> list[str]:
        holder = self.context.processes.pid(self._pid("node-namespace"))
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
                    "bridge": host.BRIDGE,
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
        self.context.processes.spawn(
            self._pid("containerd"),
            self.in_namespace([str(BIN / "containerd"), "--config", str(root / "config.toml")]),
            # The shim is found on PATH, next to containerd; runc is named in the config.
            env={"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"},
        )
        self.context.processes.wait(self._pid("containerd"), lambda: self.ctr("version") is not None)

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
        host.save_tunables(self.context.state)
        host.make_cgroup_root(self.spec.cgroup_root)
        config, kubeconfig = self.write_kubelet_config()
        kubelet_dir = config.parent
        self.context.processes.spawn(
            self._pid("kubelet"),
            self.in_namespace(
                [
                    str(BIN / "kubelet"),
                    f"--config={config}",
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

    def write_kubelet_config(self) -> tuple[Path, Path]:
        """The kubelet's configuration file and kubeconfig; its ports go into the node's record first, so that a
        restarted kubelet keeps them (Prometheus scrapes one)."""
        context, record = self.context, self._record
        kubelet_dir = self.dir / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.dir / "kubelet.kubeconfig"
        write_kubeconfig(kubeconfig, context.server, context.pki, f"kubelet-{self.spec.name}")
        credentials = context.pki / f"kubelet-{self.spec.name}"
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine's memory controller is on cgroup v1; from 1.35 the kubelet refuses v1 unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",  # no systemd here
            "cgroupRoot": f"/{self.spec.cgroup_root}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.spec.ip,
            "port": record.get("kubelet_port") or free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": record.get("healthz_port") or free_port(),
            "tlsCertFile": f"{credentials}.crt",
            "tlsPrivateKeyFile": f"{credentials}.key",
            **kubelet_settings(str(context.pki / "ca.crt")),
            "staticPodPath": "",
            "registerWithTaints": [{"key": k, "value": v, "effect": e} for k, v, e in self.spec.taints],
        }
        if self.spec.system_reserved_memory:
            config["systemReserved"] = {"memory": self.spec.system_reserved_memory}
        record["kubelet_port"], record["healthz_port"] = config["port"], config["healthzPort"]
        context.state.save()
        (kubelet_dir / "config.yaml").write_text(yaml.safe_dump(config))
        return kubelet_dir / "config.yaml", kubeconfig

    def restart(self, part: str) -> None:
        """Stop the node's kubelet or containerd and start it again as it was, as systemd restarts a node's agent
        after an upgrade or a crash: the pods, their shims and their processes live on (containerd's shims keep the
        containers; the kubelet finds its pods again)."""
        if part not in ("kubelet", "containerd"):
            raise ClusterError(f"no {part} to restart on a node: kubelet or containerd")
        self.context.processes.end(self._pid(part))
        if part == "kubelet":
            self._kubelet()
        else:
            self._containerd()

    def stop(self) -> list[str]:
        """Take the node down: its kubelet, then its containers (by the cgroups they run in: they outlive the kubelet
        and their shims), shims, containerd, and its mount namespace (the containers' mounts go with its last
        process); its cgroups and its address on the bridge. What could not be undone."""
        processes = self.context.processes
        processes.end(self._pid("kubelet"))
        host.kill_in_cgroups(self.spec.cgroup_root)
        kill(list(processes_with(f"containerd-shim-runc-v2 -namespace {K8S_NAMESPACE}", str(self.containerd_socket))))
        for part in PARTS[1:]:
            processes.end(self._pid(part))
        problems = host.remove_cgroup_root(self.spec.cgroup_root)
        host.remove_address(self.spec.ip)
        return problems
