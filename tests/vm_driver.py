"""Runs inside the test VM (tests/kernel_vm.py), as /init's child: lays out cgroups as the plan says, runs the
workload in each layout the way a runtime would start a container there, and reports the raw facts.

It judges nothing: each layout's result is one JSON line on stdout (the second serial port): the workload's
stdout, stderr and exit status, and each watched cgroup's memory.events. The tests on the host assert on them.
Python 3.11 standard library only: it runs on the VM's Debian python3.
"""

from __future__ import annotations

import compileall
import ctypes
import errno
import json
import os
import py_compile
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")
RESULT_MARK = "oom-killer-vm-result "
FINIT_MODULE = 313  # x86_64
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_FILE = "/tmp/oom-killer-sandbox"  # noqa: S108 - under the tmpfs /init mounts, the VM's own

# How the workload is started, by `namespace` in the plan. The shell joins the leaf cgroup first, then (as a
# runtime does) makes the cgroup namespace, so the namespace's root is the container's own cgroup.
START = {
    # No cgroup namespace: the host's view, /proc/self/cgroup names the full path.
    "none": 'echo $$ > "$1/cgroup.procs" && exec python3 -S -m workload',
    # A namespace with cgroup2 mounted afresh inside it (runc and crun on cgroup v2): the mount shows the
    # container's cgroup at its root.
    "fresh-mount": 'echo $$ > "$1/cgroup.procs" && exec unshare --cgroup --mount sh -c '
    # The outer mount goes first: the kernel will not mount a superblock over its own root (EBUSY), and in a
    # container the fresh mount is the only one at /sys/fs/cgroup.
    '"umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec python3 -S -m workload"',
    # A namespace that keeps the mount made outside it: mountinfo shows the mount's root as /../.. from inside.
    "inherited-mount": 'echo $$ > "$1/cgroup.procs" && exec unshare --cgroup python3 -S -m workload',
}


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        return f"unreadable: {error}"


def keyed(text: str) -> dict[str, int]:
    pairs = (line.split() for line in text.splitlines())
    return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2 and fields[1].isdigit()}


def make(cgroups: list[tuple[str, dict[str, object]]]) -> None:
    """Each (path, {file: value}) in order, parents first; every parent hands the memory controller down."""
    for path, files in cgroups:
        directory = CGROUP / path
        control = directory.parent / "cgroup.subtree_control"
        if "memory" not in read(control).split():
            control.write_text("+memory")
        directory.mkdir()
        for name, value in files.items():
            (directory / name).write_text(str(value))


def remove(cgroups: list[tuple[str, dict[str, object]]]) -> None:
    for path, _ in reversed(cgroups):
        for _ in range(50):
            try:
                (CGROUP / path).rmdir()
                break
            except OSError:
                time.sleep(0.1)


def load_module(path: Path) -> None:
    """finit_module(2): the root has no kmod, and these modules need no parameters."""
    libc = ctypes.CDLL(None, use_errno=True)
    with path.open("rb") as module:
        if libc.syscall(FINIT_MODULE, module.fileno(), b"", 0) != 0 and ctypes.get_errno() != errno.EEXIST:
            raise OSError(ctypes.get_errno(), f"finit_module {path}")


def swap_on(mib: int) -> None:
    """A zram swap device of mib MiB (in the VM's RAM; it compresses the hog's pages to almost nothing)."""
    for name in ("zsmalloc.ko", "zram.ko"):
        load_module(Path("/modules") / name)
    Path("/sys/block/zram0/disksize").write_text(f"{mib}M")
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True, capture_output=True)


def disk_on(mib: int, where: str) -> None:
    """An ext4 filesystem of mib MiB on a zram device, mounted at `where`: a disk whose page cache is reclaimable."""
    for name in ("zsmalloc.ko", "zram.ko", "crc16.ko", "mbcache.ko", "jbd2.ko", "crc32c_generic.ko", "ext4.ko"):
        load_module(Path("/modules") / name)
    Path("/sys/block/zram0/disksize").write_text(f"{mib}M")
    subprocess.run(["mkfs.ext4", "-q", "/dev/zram0"], check=True, capture_output=True)
    Path(where).mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", "/dev/zram0", where], check=True, capture_output=True)
    Path(where).chmod(0o777)


def disk_off(where: str) -> None:
    subprocess.run(["umount", where], check=True, capture_output=True)
    Path("/sys/block/zram0/reset").write_text("1")


def swap_off() -> None:
    subprocess.run(["swapoff", "/dev/zram0"], check=True, capture_output=True)
    Path("/sys/block/zram0/reset").write_text("1")


def run(layout: dict[str, Any]) -> dict[str, object]:
    """One layout, undone afterwards even when it fails (its swap or disk device, its cgroups, its tmpfs files),
    so that the layouts after it in the same boot start from the same VM as they would alone."""
    cgroups = [(str(path), dict(files)) for path, files in layout["cgroups"]]
    try:
        if layout.get("swap_mib"):
            swap_on(int(layout["swap_mib"]))
        if layout.get("tmpfs_dir"):
            Path(layout["tmpfs_dir"]).mkdir(parents=True, exist_ok=True)  # under /tmp, the tmpfs /init mounts
        if layout.get("disk_dir"):
            disk_on(int(layout["disk_mib"]), layout["disk_dir"])
        make(cgroups)
        if layout.get("sandbox_mib"):
            # The pod's sandbox, charged for what the workload in its sibling cannot see (a pause's pages): a tmpfs
            # file written from its cgroup stays charged to it.
            subprocess.run(
                [
                    *("sh", "-c", 'echo $$ > "$1/cgroup.procs" && head -c "$2" /dev/zero > "$3"', "sh"),
                    *(str(CGROUP / layout["sandbox"]), str(int(layout["sandbox_mib"]) << 20), SANDBOX_FILE),
                ],
                check=True,
            )
        return start_and_watch(layout, cgroups)
    finally:
        undo(layout, cgroups)


def undo(layout: dict[str, Any], cgroups: list[tuple[str, dict[str, object]]]) -> None:
    remove([(path, files) for path, files in cgroups if (CGROUP / path).is_dir()])
    Path(SANDBOX_FILE).unlink(missing_ok=True)
    if layout.get("tmpfs_dir"):
        # A kill leaves the hog's tmpfs files, charged to the parent once its cgroup is gone: free that memory.
        for left in Path(layout["tmpfs_dir"]).glob("oom-killer-hog-*"):
            left.unlink(missing_ok=True)
    if layout.get("disk_dir") and Path(layout["disk_dir"]).is_mount():
        disk_off(layout["disk_dir"])
    if layout.get("swap_mib") and "/dev/zram0" in read(Path("/proc/swaps")):
        swap_off()


def start_and_watch(layout: dict[str, Any], cgroups: list[tuple[str, dict[str, object]]]) -> dict[str, object]:
    started = time.monotonic()
    process = subprocess.Popen(
        ["sh", "-c", START[layout.get("namespace", "none")], "sh", str(CGROUP / layout["leaf"])],
        cwd="/oom-killer",
        env={"PATH": PATH, "TERMINATION_MESSAGE_PATH": "", **layout.get("env", {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop_seconds = None
    try:
        stdout, stderr = process.communicate(timeout=float(layout.get("stop_after", layout.get("timeout", 240))))
    except subprocess.TimeoutExpired:
        if layout.get("stop_after"):
            # Still running when the plan says to stop it, as a kubelet would: SIGTERM, and how long it took to go.
            process.terminate()
            stopping = time.monotonic()
            stdout, stderr = process.communicate(timeout=30)
            stop_seconds = round(time.monotonic() - stopping, 2)
        else:
            process.kill()
            stdout, stderr = process.communicate()
    seconds = time.monotonic() - started
    events = {path: keyed(read(CGROUP / path / "memory.events")) for path, _ in cgroups}
    meminfo = keyed(read(Path("/proc/meminfo")).replace(":", "").replace(" kB", ""))
    return {
        "name": layout["name"],
        "returncode": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": round(seconds, 2),
        "events": events,
        "swap_total_kib": meminfo.get("SwapTotal"),
        "stop_seconds": stop_seconds,
        "memory_dir_left": sorted(p.name for p in Path(where).iterdir())
        if (where := layout.get("tmpfs_dir") or layout.get("disk_dir"))
        else None,
    }


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    os.environ["PATH"] = PATH  # the kernel starts /init with none, and mkswap and swapon are in sbin
    print(f"oom-killer-vm-kernel {os.uname().release} python {sys.version.split()[0]}", flush=True)
    # As the image does at build: the workload's bytecode made once, so that no layout's hog compiles it at its start
    # (the first one did, and its charge at start held the compiler's garbage, freed as it grew).
    compileall.compile_dir(
        str(Path(__file__).resolve().parent / "workload"),
        quiet=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    for layout in plan:
        try:
            result = run(layout)
        except Exception:  # one broken layout must not hide the others' results
            result = {"name": layout.get("name"), "error": traceback.format_exc()}
        print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
