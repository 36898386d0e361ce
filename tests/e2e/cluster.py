"""The test cluster on this machine, from binaries built out of the upstream release modules: a control plane and
its nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler listen on loopback only; each node's containerd
runs pods with Debian's runc and CNI plugins on a bridge of the cluster's own (no route out, no masquerading, no
kube-proxy); each node's kubelet runs them in memory cgroups under a cgroup root of its own. One node (`NODE`)
unless a test asks for a pool of its own (`Cluster.pool`). Everything the cluster makes lives in one work folder,
and `stop` (also `python -m tests.e2e.cluster stop DIR` from another process) takes it all down from the state file
written there: processes by pid, containers by their cgroups, mounts, the bridge, and the kernel settings the
kubelet changes.

The parts, as kind splits its own, are in `tests/e2e/harness/`; this is the façade the tests use.

Usage, from the project's root (python -m finds the tests package only there; `stop_command` gives the line that
works from any folder): python -m tests.e2e.cluster stop DIR (the cluster is started by make e2e; E2E_KEEP=1
leaves it up and prints that line)
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from tests.e2e.harness import control_plane, host
from tests.e2e.harness.control_plane import Context
from tests.e2e.harness.nodes import (
    CONTAINERD_RUN,
    EVICTION_HARD_MIB,
    POD_LOGS,
    Node,
    NodeSpec,
    free_address,
)
from tests.e2e.harness.state import BIN, ClusterError, alive, missing_binaries, processes_with
from tests.e2e.pki import Authority
from tests.support import PROJECT

NODE = "oom-killer-e2e"  # the first node: every test's pods run there unless they ask for a pool
READY_TIMEOUT = 180.0


def as_json(api: Any, model: object) -> dict[str, Any]:
    """A client model as the API's own JSON (camelCase keys), to read without a None check at every level."""
    return cast(dict[str, Any], api.sanitize_for_serialization(model))


class Cluster:
    """The cluster in `workdir`: `start()` runs the control plane's steps and joins the first node, `pool()` a node
    of a test's own, `stop()` takes down all it made (also after a crash, from the state file)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.context = Context.of(workdir)
        self.pki, self.kubeconfig, self.logs = self.context.pki, self.context.kubeconfig, self.context.processes.logs
        self.node_images: list[bytes] = []  # archives every node has from its start (the pod sandbox's image)
        self.nodes = {
            name: Node(self.context, NodeSpec.from_state(record)) for name, record in self.context.state.nodes.items()
        }

    # -- what the tests read ----------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self.context.server

    @property
    def etcd_url(self) -> str:
        return self.context.etcd_url

    @property
    def authority(self) -> Authority | None:
        return self.context.authority

    @property
    def first(self) -> Node:
        return self.nodes[NODE]

    # -- start ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise ClusterError(f"not built: {', '.join(missing)} in {BIN} (tests/e2e/builds/build.sh builds them)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.context.state.set("workdir", str(self.workdir))
        for step in control_plane.STEPS:
            step(self.context)
        self.add_node(NODE)

    def add_node(
        self, name: str, system_reserved_memory: str | None = None, taints: tuple[tuple[str, str, str], ...] = ()
    ) -> Node:
        """Join a node made from the common recipe, at the first free address on the bridge; it registers itself
        with the API server."""
        if name in self.nodes:
            raise ClusterError(f"node {name} is already in the cluster")
        ip, subnet = free_address([node.spec for node in self.nodes.values()])
        spec = NodeSpec(name, ip, subnet, name, system_reserved_memory, taints)
        node = Node(self.context, spec)
        self.nodes[name] = node
        self.context.state.nodes[name] = spec.as_state()
        self.context.state.save()
        node.start()
        for archive in self.node_images:
            node.load_image(archive)
        return node

    def remove_node(self, name: str) -> list[str]:
        """Stop a node and delete it from the API server (as `kind delete node` would); what could not be undone."""
        from kubernetes import client  # only where a cluster runs

        problems = self.nodes.pop(name).stop()
        self.context.state.nodes.pop(name, None)
        self.context.state.save()
        with contextlib.suppress(Exception):
            client.CoreV1Api(self.api()).delete_node(name)
        return problems

    @contextlib.contextmanager
    def pool(self, name: str, taints: tuple[tuple[str, str, str], ...], allocatable_mib: int) -> Iterator[Node]:
        """A node of the test's own, as a node pool: tainted, and with systemReserved memory such that the scheduler
        sees `allocatable_mib` (its pods' cgroup gets that plus the eviction threshold). Ready when entered;
        removed on leaving, failing if it left anything behind."""
        reserved = host.mem_total_mib() - allocatable_mib - EVICTION_HARD_MIB
        node = self.add_node(name, f"{reserved}Mi", taints)
        problems: list[str] = []
        try:
            self.wait_ready(name=name)
            yield node
        finally:
            problems = self.remove_node(name)
        if problems:
            raise ClusterError(f"node {name} left things behind: {problems}")

    # -- what the tests use -----------------------------------------------------------------------------------

    def run_beside(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start a process that serves the cluster from outside it (kube-state-metrics, Prometheus), logged to
        logs/NAME.log and recorded in the state file, so that `stop` ends it too, even after a crash."""
        return self.context.processes.spawn(name, argv)

    def end(self, name: str) -> None:
        """Stop a process started by run_beside (SIGTERM, then SIGKILL after 10 s)."""
        self.context.processes.end(name)

    def stop_apiserver(self) -> None:
        """Kill kube-apiserver alone, as a control plane's crash does (SIGKILL: no graceful drain, so no request in
        flight gets through): etcd, the controllers and the nodes run on, and every client's requests fail until
        `start_apiserver()`."""
        self.context.processes.end("kube-apiserver", grace=0.0)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again, at its address, on the same etcd."""
        control_plane.apiserver(self.context)

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
        self.context.processes.wait(f"{name}/kubelet", lambda: self.node_ready(name), timeout=timeout)

    def kubelets(self) -> list[str]:
        """Each node's kubelet as host:port (its metrics and cAdvisor endpoints, over TLS)."""
        return [f"{node.spec.ip}:{node.kubelet_port}" for node in self.nodes.values()]

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Take down all the cluster made; return what could not be (empty when the machine is as it was)."""
        state, processes = self.context.state, self.context.processes
        problems: list[str] = []
        beside = [
            name
            for name in state.pids
            if name not in control_plane.PROCESSES and name.partition("/")[0] not in self.nodes
        ]
        for name in beside:  # what ran beside the cluster, first
            processes.end(name)
        for node in list(self.nodes.values()):
            problems += node.stop()
        for name in control_plane.PROCESSES:
            processes.end(name)
        problems += host.unmount_below(self.workdir)
        host.delete_bridge(state)
        host.restore_tunables(state)
        for target in (CONTAINERD_RUN, POD_LOGS):
            host.remove_made_folder(state, target)
        left = [pid for pid in processes_with(str(BIN)) if alive(pid)]
        if left:
            problems.append(f"processes still running from {BIN}: {left}")
        return problems


def stop_command(workdir: Path) -> str:
    """The shell line that stops the cluster in `workdir` from any folder: `python -m tests.e2e.cluster` finds the
    tests package only from the project's root, so the line goes there first (with this very interpreter)."""
    module = f"{shlex.quote(sys.executable)} -m tests.e2e.cluster stop {shlex.quote(str(workdir.resolve()))}"
    return f"cd {shlex.quote(str(PROJECT))} && {module}"


def main(argv: list[str]) -> int:
    """`stop DIR`: take down a cluster that `make e2e E2E_KEEP=1` left running (it prints this command)."""
    if len(argv) == 2 and argv[0] == "stop":
        problems = Cluster(Path(argv[1])).stop()
        for problem in problems:
            print(f"e2e stop: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print(f"usage: cd {shlex.quote(str(PROJECT))} && python -m tests.e2e.cluster stop DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
