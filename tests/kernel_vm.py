"""A real cgroup v2 kernel for the tests: Debian's own kernel booted under QEMU (TCG) from an initramfs.

The base (the kernel, and a cpio of a `debootstrap --variant=minbase --include=python3 bookworm` root) is made
once per machine and kept under CACHE. Each boot appends a small cpio holding the project's `workload/`, the
driver (tests/vm_driver.py) and its plan; the kernel unpacks concatenated archives in order. The driver writes
its results to the second serial port (/dev/ttyS1), which QEMU writes to a file; the console (kernel messages)
goes to another file, kept for when something fails.

Run as `python -m tests.kernel_vm` to make (or check) the cache ahead of the tests, as `.ci/run` does.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent

CACHE = Path(os.environ.get("OOM_KILLER_VM_CACHE", "/var/cache/oom-killer-ci/vm"))
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Bump when what goes into the base changes: a base made by an older recipe is made again.
RECIPE = "3"
GUEST_MEMORY_MIB = 1024
RESULT_MARK = "oom-killer-vm-result "

# The base's /init: mounts what the driver needs, runs it, powers off. A shell script, so a broken driver still
# ends the VM at once instead of leaving it to the host's timeout.
INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
cd /oom-killer && python3 -S vm_driver.py plan.json >/dev/ttyS1 2>&1
echo "oom-killer-vm-exit $?" >/dev/ttyS1
echo o >/proc/sysrq-trigger
sleep 60
"""

# The modules for a swap device in RAM (zram), so that swap can be on in the VM; the kernel has no modules.dep and
# the root no kmod: the driver loads them itself, in this order.
SWAP_MODULES = ("kernel/mm/zsmalloc.ko", "kernel/drivers/block/zram/zram.ko")
# A disk filesystem for page cache (ext4 on a zram device), in load order: ext4 needs crc16, mbcache and jbd2, and
# both it and jbd2 ask the crypto API for crc32c, which Debian builds as a module.
DISK_MODULES = (
    "kernel/lib/crc16.ko",
    "kernel/fs/mbcache.ko",
    "kernel/fs/jbd2/jbd2.ko",
    "kernel/crypto/crc32c_generic.ko",
    "kernel/fs/ext4/ext4.ko",
)

# Not needed to run python3 in a throwaway VM; without them the base is about half the size to unpack.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt", "var/lib/apt/lists")


class VmUnavailable(RuntimeError):
    """This machine cannot make or boot the VM (a tool or the Debian mirror is missing)."""


def missing_tools() -> list[str]:
    return [
        tool for tool in ("qemu-system-x86_64", "cpio", "debootstrap", "apt-get", "dpkg-deb") if not shutil.which(tool)
    ]


def _run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise VmUnavailable(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _download_kernel(work: Path) -> Path:
    """Debian's current kernel image, extracted (never installed) to work/kernel: the path of its vmlinuz."""
    try:
        _run(["apt-get", "download", "linux-image-amd64"], cwd=work)
    except VmUnavailable:
        _run(["apt-get", "update", "-qq"])  # no package lists yet (or stale ones) on this machine
        _run(["apt-get", "download", "linux-image-amd64"], cwd=work)
    meta = next(work.glob("linux-image-amd64_*.deb"))
    depends = _run(["dpkg-deb", "-f", str(meta), "Depends"]).split(",")
    image = next(d.split()[0] for d in depends if d.strip().startswith("linux-image-"))
    _run(["apt-get", "download", image], cwd=work)
    package = next(work.glob(f"{image}_*.deb"))
    _run(["dpkg-deb", "-x", str(package), str(work / "kernel")])
    return next((work / "kernel/boot").glob("vmlinuz-*"))


def _cpio(directory: Path, archive: Path) -> None:
    files = subprocess.run(["find", "."], cwd=directory, capture_output=True, check=True).stdout
    with archive.open("wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=directory, input=files, stdout=out, check=True)


def build_base(cache: Path = CACHE) -> Path:
    """The cached base (kernel and root cpio), made first if absent; its directory."""
    ready = cache / f"recipe-{RECIPE}"
    if (ready / "ready").exists():
        return ready
    missing = missing_tools()
    if missing:
        raise VmUnavailable(f"missing: {', '.join(missing)} (Debian: qemu-system-x86 cpio debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be making it right now
        if (ready / "ready").exists():
            return ready
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as temporary:
            work = Path(temporary)
            vmlinuz = _download_kernel(work)
            root = work / "root"
            _run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root), DEBIAN_MIRROR])
            for relative in PRUNE:
                shutil.rmtree(root / relative, ignore_errors=True)
            modules = work / "kernel/lib/modules" / vmlinuz.name.removeprefix("vmlinuz-")
            (root / "modules").mkdir()
            for relative in SWAP_MODULES + DISK_MODULES:
                shutil.copy(modules / relative, root / "modules" / Path(relative).name)
            (root / "init").write_text(INIT)
            (root / "init").chmod(0o755)
            staged = work / "staged"
            staged.mkdir()
            shutil.copy(vmlinuz, staged / "vmlinuz")
            (staged / "kernel-version").write_text(vmlinuz.name.removeprefix("vmlinuz-") + "\n")
            _cpio(root, staged / "base.cpio")
            shutil.rmtree(ready, ignore_errors=True)
            staged.rename(ready)
        (ready / "ready").write_text(f"made in {time.monotonic() - started:.0f}s\n")
        for older in cache.glob("recipe-*"):
            if older != ready:
                shutil.rmtree(older, ignore_errors=True)  # an older recipe's base, 120 MiB no test uses now
    return ready


class Boot:
    """What one boot produced: the driver's results by name, all it wrote, the console, the wall time."""

    def __init__(self, results: dict[str, dict[str, Any]], output: str, console: str, seconds: float) -> None:
        self.results = results
        self.output = output
        self.console = console
        self.seconds = seconds


def initrd_with(base: Path, payload: Path, work: Path) -> Path:
    """The base's cpio with the `payload` folder appended as a second archive (work/payload.cpio), in
    work/initrd.cpio: the kernel unpacks concatenated archives in order."""
    _cpio(payload, work / "payload.cpio")
    initrd = work / "initrd.cpio"
    with initrd.open("wb") as out:
        for part in (base / "base.cpio", work / "payload.cpio"):
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, out)
    return initrd


def qemu_command(kernel: Path, initrd: Path, append: str, memory_mib: int, cpus: int, cpu: str = "") -> list[str]:
    """QEMU under TCG with no display, no monitor and no reboot, booting `kernel` with `initrd`; the caller adds its
    serial ports and network."""
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        *(["-cpu", cpu] if cpu else []),
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        append,
    ]


def boot(plan: list[dict[str, Any]], work: Path, timeout: float = 600) -> Boot:
    """Boot the kernel with the workload, the driver and this plan; the driver's results once it powers off."""
    base = build_base()
    payload = work / "payload"
    (payload / "oom-killer/workload").mkdir(parents=True)
    for source in (PROJECT / "workload").glob("*.py"):
        shutil.copy(source, payload / "oom-killer/workload" / source.name)
    shutil.copy(PROJECT / "tests/vm_driver.py", payload / "oom-killer/vm_driver.py")
    (payload / "oom-killer/plan.json").write_text(json.dumps(plan))
    initrd = initrd_with(base, payload, work)
    console, results = work / "console.txt", work / "results.txt"
    command = qemu_command(base / "vmlinuz", initrd, "console=ttyS0 rdinit=/init panic=-1 quiet", GUEST_MEMORY_MIB, 1)
    command += ["-serial", f"file:{console}", "-serial", f"file:{results}"]
    started = time.monotonic()
    try:
        subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    finally:
        # The initrd is a copy of the base (~120 MiB): a soak's many boots must not each leave one behind.
        for made in (initrd, work / "payload.cpio"):
            made.unlink(missing_ok=True)
        shutil.rmtree(payload, ignore_errors=True)
    seconds = time.monotonic() - started
    found: dict[str, dict[str, Any]] = {}
    text = results.read_text(errors="replace") if results.exists() else ""
    for line in text.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            found[result["name"]] = result
    return Boot(found, text, console.read_text(errors="replace") if console.exists() else "", seconds)


if __name__ == "__main__":
    started = time.monotonic()
    where = build_base()
    version = (where / "kernel-version").read_text().strip()
    print(f"kernel VM base ready at {where} (kernel {version}), {time.monotonic() - started:.0f}s")
    sys.exit(0)
