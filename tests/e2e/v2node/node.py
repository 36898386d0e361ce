"""A node on cgroup v2 that joins the e2e cluster (issue 32): Debian's own kernel under QEMU (TCG), booted from the
VM tests' cached base with the cluster's containerd and kubelet (payload.py), registering with the harness's API
server as any node does.

The network is QEMU's user networking, so nothing on this machine changes but one address on the harness's bridge:

- the guest reaches the API server, which listens on this machine's loopback, through `guestfwd` (10.0.2.100:6443 in
  the guest) to a socat QEMU starts for each connection (`guestfwd` to a `tcp:` chardev is one connection for the
  VM's life: the kubelet's second one hangs in its TLS handshake), naming it by its certificate's 127.0.0.1
  (`tls-server-name`);
- the kubelet reports the node's address on the bridge (ADDRESS, also on the guest's NIC), and QEMU's `hostfwd`
  listens there for its port: the API server reaches it for logs, and Prometheus for its metrics, as any node's;
- guest/control.py's port is forwarded from this machine's loopback: it restarts the kubelet with a changed setting
  (singleProcessOOMKill, memorySwap), turns swap on (a zram device) and reads the guest's cgroup files.

The images are imported on this machine into a containerd root the guest copies (the pod sandbox and the stacks'
images: `imagePullPolicy: IfNotPresent` finds them). The node is tainted (TAINT): only a stack that tolerates it, and
selects it, runs there. QEMU runs beside the cluster (`run_beside`), so `stop` ends it even after a crash.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import host
from tests.e2e.harness.control_plane import write_kubeconfig
from tests.e2e.harness.nodes import kubelet_settings
from tests.e2e.v2node import payload
from tests.kernel_vm import build_base, qemu_command
from tests.servers import free_port

NAME = "oom-killer-e2e-v2"
ADDRESS = host.node_address(199)[0]  # far above the addresses the harness hands its own nodes, first free first
TAINT = ("oom-killer.test/cgroup", "v2", "NoSchedule")
TOLERATION = "oom-killer.test/cgroup=v2:NoSchedule"  # the stack's tolerations setting for it
SELECTOR = f"kubernetes.io/hostname={NAME}"  # the stack's nodeSelector setting for it
API_IN_GUEST = "10.0.2.100"
CONTROL_PORT = 10299  # guest/control.py's, in the guest
QEMU = "v2node-qemu"  # its name among the processes run beside the cluster
MEMORY_MIB = 3072
SMP = 2
READY_TIMEOUT = 300.0  # the probe measured 40 s from QEMU's start to a pod's kill; under load, several times that


class V2NodeError(Exception):
    """The node could not be made, booted or changed; the message says which, with the guest's words."""


class V2Node:
    """The node, once `start` has booted it: Ready in the cluster, its kubelet changeable, its cgroups readable."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.dir: Path = cluster.workdir / "v2node"
        self.kubelet_port = free_port()
        self.control_port = free_port()
        self.booted_at = 0.0

    # -- making and booting -------------------------------------------------------------------------------------

    def kubelet_config(self) -> dict[str, Any]:
        """The kubelet's configuration, as the harness writes its own nodes' (nodes.py), for cgroup v2: no
        failCgroupV1, the node's certificate from the harness's CA, webhook authentication and authorization."""
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "address": "0.0.0.0",  # noqa: S104 (in the guest: QEMU forwards one port of the host to it)
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": "/v2/join/kubelet.crt",
            "tlsPrivateKeyFile": "/v2/join/kubelet.key",
            **kubelet_settings("/v2/join/ca.crt"),
            "singleProcessOOMKill": False,  # the kubelet's default on cgroup v2: memory.oom.group=1
            "nodeStatusUpdateFrequency": "5s",
            "registerWithTaints": [{"key": TAINT[0], "value": TAINT[1], "effect": TAINT[2]}],
        }

    def join_files(self, into: Path) -> None:
        """What the guest joins with, in the payload's v2/join: its name and address, the kubelet's configuration
        and kubeconfig, its certificate and the cluster's CA."""
        context = self.cluster.context
        context.issuer().issue(f"kubelet-{NAME}", f"system:node:{NAME}", "system:nodes", server_names=(ADDRESS, NAME))
        into.mkdir(parents=True)
        (into / "name").write_text(NAME)
        (into / "ip").write_text(ADDRESS)
        spec = {"name": NAME, "ip": ADDRESS, "control_port": CONTROL_PORT, "config": self.kubelet_config()}
        (into / "node.json").write_text(json.dumps(spec, indent=1))
        for suffix in ("crt", "key"):
            shutil.copy(context.pki / f"kubelet-{NAME}.{suffix}", into / f"kubelet.{suffix}")
        shutil.copy(context.pki / "ca.crt", into / "ca.crt")
        write_kubeconfig(into / "kubeconfig", f"https://{API_IN_GUEST}:6443", Path("/v2/join"), "kubelet")
        kubeconfig = yaml.safe_load((into / "kubeconfig").read_text())
        kubeconfig["clusters"][0]["cluster"]["tls-server-name"] = "127.0.0.1"  # the name its certificate has
        (into / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))

    def initrd(self, base: Path, archives: list[bytes]) -> Path:
        """The node's initrd: the VM tests' base, the node's payload, the join files and the images seeded."""
        build = self.dir / "build"
        shutil.rmtree(build, ignore_errors=True)
        staged = payload.stage(base, build)
        self.join_files(staged / "v2/join")
        files = []
        for number, archive in enumerate(archives):
            files.append(build / f"image-{number}.tar")
            files[-1].write_bytes(archive)
        payload.import_images(files, build / "seed", staged / "v2/seed/containerd")
        for file in files:
            file.unlink()
        (staged / "v2/seed/pki").mkdir()  # init copies it to the kubelet's folder; this node's is in v2/join
        return payload.finish(base, build, staged)

    def command(self, base: Path, initrd: Path) -> list[str]:
        append = f"console=ttyS0 rdinit=/v2/init panic=-1 quiet psi=1 v2node.watch={24 * 3600}"
        nic = (
            "user,model=e1000,restrict=on"
            f",hostfwd=tcp:{ADDRESS}:{self.kubelet_port}-:{self.kubelet_port}"
            f",hostfwd=tcp:127.0.0.1:{self.control_port}-:{CONTROL_PORT}"
            f",guestfwd=tcp:{API_IN_GUEST}:6443-cmd:socat - TCP:127.0.0.1:{self.api_port()}"
        )
        return [
            *qemu_command(base / "vmlinuz", initrd, append, MEMORY_MIB, SMP),
            "-nic",
            nic,
            "-serial",
            f"file:{self.dir / 'console.txt'}",
            "-serial",
            f"file:{self.dir / 'marks.txt'}",
            "-serial",
            f"file:{self.dir / 'logs.txt'}",
        ]

    def api_port(self) -> int:
        server = str(self.cluster.server)  # https://127.0.0.1:PORT
        return int(server.rsplit(":", 1)[1])

    def start(self, archives: list[bytes]) -> float:
        """Make the initrd, boot, and wait until the node is Ready; the seconds from QEMU's start to Ready."""
        self.dir.mkdir(parents=True, exist_ok=True)
        base = build_base()
        initrd = self.initrd(base, [*self.cluster.node_images, *archives])
        host.add_address(ADDRESS)
        self.cluster.run_beside(QEMU, self.command(base, initrd))
        self.booted_at = time.monotonic()
        try:
            self.cluster.context.processes.wait(QEMU, lambda: self.cluster.node_ready(NAME), READY_TIMEOUT)
        except Exception as error:
            raise V2NodeError(f"the v2 node was not Ready: {error}\n{self.guest_words()}") from error
        return time.monotonic() - self.booted_at

    # -- what the tests use ---------------------------------------------------------------------------------------

    def control(self, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """A call to guest/control.py: its JSON answer (the text of a file's)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", data=data)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (our forward, plain http)
                text = answer.read().decode()
        except (urllib.error.URLError, OSError) as error:
            raise V2NodeError(f"the v2 node's control port did not answer {path}: {error}") from error
        return text if path.startswith("/file") else json.loads(text)

    def configure(self, **settings: Any) -> float:
        """Restart the guest's kubelet with these settings changed; the seconds until the node reports Ready from
        the new kubelet (its heartbeat after the restart)."""
        started = time.monotonic()
        before = self.heartbeat()
        self.control("/kubelet", settings)
        deadline = started + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.heartbeat() != before and self.cluster.node_ready(NAME):
                return time.monotonic() - started
            time.sleep(0.5)
        raise V2NodeError(f"the v2 node's kubelet was not Ready again after {settings}\n{self.guest_words()}")

    def swap_on(self, mib: int) -> dict[str, int]:
        """Swap on in the guest, a zram device of `mib` MiB (before a kubelet restart with memorySwap: the kubelet
        reads the node's swap when it starts); the guest's MemTotal and SwapTotal, in bytes."""
        found: dict[str, int] = self.control("/swap", {"mib": mib})
        return found

    def heartbeat(self) -> str:
        conditions = self.cluster.node(NAME).get("status", {}).get("conditions", [])
        return next((str(c.get("lastHeartbeatTime")) for c in conditions if c["type"] == "Ready"), "")

    def cgroups(self) -> list[dict[str, Any]]:
        """Each container's cgroup in the guest with its memory files (memory.oom.group, memory.events, ...)."""
        found: list[dict[str, Any]] = self.control("/cgroups")
        return found

    def guest_words(self) -> str:
        """The tail of what the guest said: its marks, the kubelet's log, the console."""
        parts = []
        for name in ("marks.txt", "console.txt"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        try:
            parts.append(
                "--- kubelet.log\n"
                + "\n".join(str(self.control("/file?path=/var/log/kubelet.log", timeout=10)).splitlines()[-25:])
            )
        except V2NodeError as error:
            parts.append(str(error))
        return "\n".join(parts)

    def stop(self) -> None:
        """End QEMU, delete the node from the API server, take its address off the bridge."""
        from kubernetes import client  # only where a cluster runs

        self.cluster.end(QEMU)
        with contextlib.suppress(client.ApiException):  # a node that never registered has nothing to delete
            client.CoreV1Api(self.cluster.api()).delete_node(NAME)
        host.remove_address(ADDRESS)
        shutil.rmtree(self.dir / "build", ignore_errors=True)
