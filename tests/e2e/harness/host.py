"""What the test cluster changes on this machine, each change noted in the state file before it is made and undone
by `stop`: the pods' bridge and the nodes' addresses on it, the kernel settings a kubelet changes, the folders the
nodes' bind mounts need, the mounts below the cluster's folder, and each node's cgroup root in every hierarchy.

The cgroup hierarchies are found by `workload.cgroup.parse_mountinfo`, the workload's own tested parser.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import subprocess
import time
from pathlib import Path

from tests.e2e.harness.state import State, kill
from workload.cgroup import Mount, parse_mountinfo

BRIDGE = "oomk-e2e0"
# The nodes' addresses and their pods' subnets, handed out by the harness (`node_address`): node i has
# 10.244.0.<i+1> on the bridge (the kubelet refuses a loopback node IP) and 10.244.<i>.0/24 for its pods.
NODE_ADDRESSES = ipaddress.ip_network("10.244.0.0/24")
POD_SUBNETS = ipaddress.ip_network("10.244.0.0/16")
# What the kubelet sets on start (setupKernelTunables), saved first and put back on stop.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
MOUNTINFO = Path("/proc/self/mountinfo")

# -- the bridge ---------------------------------------------------------------------------------------------------


def make_bridge(state: State) -> None:
    """The pods' bridge; no route out of it, no NAT."""
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    state.set("bridge", BRIDGE)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)


def delete_bridge(state: State) -> None:
    if state.pop("bridge"):
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)


def node_address(index: int) -> tuple[str, str]:
    """The `index`th node's address on the bridge and its pods' subnet."""
    return str(NODE_ADDRESSES[index + 1]), str(list(POD_SUBNETS.subnets(new_prefix=24))[index])


def add_address(ip: str) -> None:
    subprocess.run(["ip", "addr", "replace", f"{ip}/24", "dev", BRIDGE], check=True)


def remove_address(ip: str) -> None:
    subprocess.run(["ip", "addr", "del", f"{ip}/24", "dev", BRIDGE], capture_output=True, check=False)


# -- kernel settings ----------------------------------------------------------------------------------------------


def save_tunables(state: State) -> None:
    """Each setting's value before any kubelet changes it (the first saved is kept)."""
    for tunable in KERNEL_TUNABLES:
        state.tunables.setdefault(tunable, Path("/proc/sys", tunable).read_text().strip())
    state.save()


def restore_tunables(state: State) -> None:
    for tunable, value in state.tunables.items():
        Path("/proc/sys", tunable).write_text(value)
    state.tunables.clear()
    state.save()


# -- folders and mounts -------------------------------------------------------------------------------------------


def _made_key(path: Path) -> str:
    """The state's note that the cluster made this folder on the machine (and removes it on stop, when empty)."""
    return f"made {path}"


def make_folder(state: State, target: Path) -> None:
    """A folder on the machine that a node's bind mount needs, noted (and so removed on stop) only if made here."""
    if not target.exists():
        target.mkdir(parents=True)
        state.set(_made_key(target), True)


def remove_made_folder(state: State, target: Path) -> None:
    if state.pop(_made_key(target)):
        with contextlib.suppress(OSError):
            target.rmdir()


def mount_points_below(directory: Path) -> list[str]:
    """Mount points of any type at or below `directory`, deepest first (the order to unmount them in)."""
    prefix = str(directory)
    points = []
    for line in MOUNTINFO.read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_below(directory: Path) -> list[str]:
    """Unmount (lazily) all mounted at or below `directory`; what could not be."""
    problems = []
    for point in mount_points_below(directory):
        result = subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        if result.returncode != 0:
            problems.append(f"umount {point}: {result.stderr.decode().strip()}")
    return problems


def mount_namespace(pid: int) -> str:
    return str(Path(f"/proc/{pid}/ns/mnt").readlink())


def mem_total_mib() -> int:
    """The machine's memory (what every node's kubelet reports as its capacity)."""
    for text in Path("/proc/meminfo").read_text().splitlines():
        if text.startswith("MemTotal:"):
            return int(text.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


# -- cgroups ------------------------------------------------------------------------------------------------------


def cgroup_mounts() -> list[Mount]:
    return parse_mountinfo(MOUNTINFO.read_text())


def memory_hierarchy() -> Path:
    """Where cgroup v1's memory hierarchy is mounted."""
    for mount in cgroup_mounts():
        if mount.fstype == "cgroup" and "memory" in mount.super_options:
            return Path(mount.mount_point)
    raise AssertionError("no cgroup v1 memory hierarchy mounted")


def cgroup_trees(root: str) -> list[Path]:
    """Every hierarchy's copy of a node's cgroup root that exists (v1 has one per controller)."""
    return [Path(mount.mount_point) / root for mount in cgroup_mounts() if (Path(mount.mount_point) / root).is_dir()]


def make_cgroup_root(root: str) -> None:
    """A kubelet's cgroupRoot in every v1 hierarchy (it must exist); a new cpuset takes its parent's cpus."""
    for mount in cgroup_mounts():
        if mount.fstype != "cgroup":
            continue
        tree = Path(mount.mount_point) / root
        tree.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (tree / name).exists() and not (tree / name).read_text().strip():
                (tree / name).write_text((tree.parent / name).read_text())


def kill_in_cgroups(root: str) -> None:
    """SIGKILL every process in a cgroup below `root` (containers outlive their kubelet and their shims). A cgroup
    removed while this walks the tree (the kubelet tearing a deleted pod down: its cgroup.procs then reads ENODEV, or
    is gone) has none left to kill."""
    for tree in cgroup_trees(root):
        for procs in tree.rglob("cgroup.procs"):
            try:
                pids = procs.read_text().split()
            except OSError as error:
                if error.errno in (errno.ENODEV, errno.ENOENT):
                    continue
                raise
            kill([int(pid) for pid in pids])


def remove_cgroup_root(root: str) -> list[str]:
    """Remove `root` and every cgroup below it, deepest first, in every hierarchy; what could not be removed."""
    problems = []
    for tree in cgroup_trees(root):
        for directory in sorted((d for d in tree.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            _rmdir_cgroup(directory)
        if not _rmdir_cgroup(tree):
            problems.append(f"cgroup {tree} is still there")
    return problems


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
