"""The node's initrd: the VM tests' cached base (tests/kernel_vm.py, read only) with a payload appended, which the
kernel unpacks after it.

The payload holds what the base lacks to be a node: the cluster's containerd, its runc shim, ctr and the kubelet
(from the binaries `make e2e` builds), Debian's runc and CNI plugins and `ip(8)` from this machine (the base is a
minbase root: no iproute2), the kernel modules a node needs from the package of the base's own kernel (the base
keeps only the VM tests' modules), the guest's files (guest/), and the two images. The images are made here without
Docker (oci.py): the pause binary, and the hog on the base's own python3 with a trimmed standard library. They go in
as archives for the guest's containerd to import, or (`seed=True`) already imported into a containerd root made
here, which saves the guest 15 to 20 s of importing under TCG.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.harness.nodes import CNI_PLUGINS, K8S_NAMESPACE, PAUSE_IMAGE, RUNC
from tests.e2e.harness.state import BIN, ClusterError
from tests.e2e.pki import Authority
from tests.e2e.v2node.oci import write_archive
from tests.kernel_vm import CACHE, PROJECT, VmUnavailable, _run, initrd_with

GUEST = Path(__file__).resolve().parent / "guest"
GUEST_FILES = (
    "init",
    "watch.py",
    "control.py",
    "containerd.toml",
    "kubelet.yaml",
    "hog-pod.yaml",
    "10-v2node.conflist",
)
AGENTS = ("containerd", "containerd-shim-runc-v2", "ctr", "kubelet")
CNI = ("bridge", "host-local", "loopback", "portmap")
# Under lib/modules/<version>/kernel/, in load order (the guest has no modules.dep): the bridge the CNI plugin makes,
# the pods' veth pairs, the overlayfs snapshotter, and the NIC QEMU gives the guest.
MODULES = (
    "net/llc/llc",
    "net/802/stp",
    "net/bridge/bridge",
    "drivers/net/veth",
    "fs/overlayfs/overlay",
    "drivers/net/ethernet/intel/e1000/e1000",
)
MODULES_CACHE = CACHE / "v2node"  # beside the base's recipe-N, which kernel_vm.build_base leaves alone
HOG_IMAGE = "localhost/oom-killer-v2node/hog:1"  # guest/hog-pod.yaml runs it
LIBRARIES = "usr/lib/x86_64-linux-gnu"
HOG_LIBRARIES = ("libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1")  # what the base's python3.11 links
# What a stdlib-only hog never imports (tests, GUI, packaging, network and mail packages): a third of the image, and
# of the guest's import time. urllib stays: pathlib needs it, and compileall pathlib.
STDLIB_PRUNED = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "distutils",
    "asyncio",
    "email",
    "xml",
    "multiprocessing",
    "unittest",
    "http",
    "html",
    "sqlite3",
    "curses",
    "dbm",
    "venv",
    "wsgiref",
    "xmlrpc",
    "json",
    "concurrent",
    "ctypes/test",
    "config-3.11-x86_64-linux-gnu",
    "site-packages",
    "dist-packages",
)
# containerd on the host, for --seed host only: a socket, root and state of its own, no CRI (it runs nothing).
SEED_CONFIG = """version = 3
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
  "io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]
[grpc]
  address = "{socket}"
"""


def kernel_modules(base: Path) -> Path:
    """A folder with MODULES' files for the base's kernel, cached: taken from its Debian package (never installed),
    once checked to be the very build of the base's vmlinuz (vermagic and symbol CRCs must match)."""
    version = (base / "kernel-version").read_text().strip()
    cached = MODULES_CACHE / f"modules-{version}"
    if cached.is_dir():
        return cached
    MODULES_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODULES_CACHE, prefix="download-") as temporary:
        work = Path(temporary)
        print(f"downloading linux-image-{version} for its modules", flush=True)
        try:
            _run(["apt-get", "download", f"linux-image-{version}"], cwd=work)
        except VmUnavailable:
            _run(["apt-get", "update", "-qq"])  # no package lists yet (or stale ones) on this machine
            _run(["apt-get", "download", f"linux-image-{version}"], cwd=work)
        package = next(work.glob(f"linux-image-{version}_*.deb"))
        build = _run(["dpkg-deb", "-f", str(package), "Version"]).strip()
        if f"Debian {build} ".encode() not in (base / "vmlinuz").read_bytes():
            raise VmUnavailable(f"{package.name} is not the build of {base / 'vmlinuz'} (Debian {build})")
        _run(["dpkg-deb", "-x", str(package), str(work / "kernel")])
        staged = work / "modules"
        staged.mkdir()
        for module in MODULES:
            shutil.copy(work / "kernel/lib/modules" / version / "kernel" / f"{module}.ko", staged)
        for older in MODULES_CACHE.glob("modules-*"):
            shutil.rmtree(older, ignore_errors=True)  # an older kernel's, which no base boots now
        staged.rename(cached)
    return cached


def extract(archive: Path, into: Path, patterns: tuple[str, ...]) -> None:
    """The members of a cpio archive that match the patterns (cpio's: `*` crosses `/`)."""
    into.mkdir(parents=True)
    with archive.open("rb") as source:
        subprocess.run(["cpio", "-idm", "--quiet", *patterns], cwd=into, stdin=source, check=True)


def libraries_beyond(binaries: list[Path], present: set[str]) -> dict[str, Path]:
    """The shared libraries the binaries link (ldd, on this machine) that the base's library folder lacks."""
    needed = {}
    for binary in binaries:
        for line in _run(["ldd", str(binary)]).splitlines():
            name, arrow, found = line.strip().partition(" => ")
            if arrow and found.startswith("/") and name not in present:
                needed[name] = Path(found.split(" (")[0])
    return needed


def hog_root(base_root: Path, hog: Path) -> None:
    """The hog image's root, laid out as the Dockerfile's: the base's python3.11 (the guest's own Debian build) and
    what it links, the trimmed stdlib, and the project's workload/ compiled by that python as the Dockerfile's RUN
    does (unchecked hashes)."""
    for folder in ("usr/bin", LIBRARIES, "usr/lib64", "tmp", "app", "dev", "proc", "sys", "etc"):
        (hog / folder).mkdir(parents=True)
    for link in ("bin", "lib", "lib64"):
        (hog / link).symlink_to(f"usr/{link}")
    shutil.copy2(base_root / "usr/bin/python3.11", hog / "usr/bin")
    (hog / "usr/bin/python3").symlink_to("python3.11")
    for library in HOG_LIBRARIES:
        shutil.copy(base_root / LIBRARIES / library, hog / LIBRARIES / library)
    # The loader's own file: the base's usr/lib64 entry is an absolute link, which would lead to this machine's.
    shutil.copy(base_root / LIBRARIES / "ld-linux-x86-64.so.2", hog / "usr/lib64")
    stdlib = hog / "usr/lib/python3.11"
    shutil.copytree(base_root / "usr/lib/python3.11", stdlib, symlinks=True)
    for pruned in STDLIB_PRUNED:
        shutil.rmtree(stdlib / pruned, ignore_errors=True)
    shutil.copytree(PROJECT / "workload", hog / "app/workload", ignore=shutil.ignore_patterns("__pycache__"))
    compile_all = ["-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", "/app/workload"]
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    subprocess.run([chroot, str(hog), "/usr/bin/python3", *compile_all], env={"PATH": "/usr/bin:/bin"}, check=True)
    (hog / "tmp").chmod(0o1777)


def images(base: Path, work: Path, into: Path) -> None:
    """pause.tar and hog.tar in `into`: the pause image under the name the e2e nodes give it, and the hog."""
    pause_root = work / "pause-root"
    pause_root.mkdir()
    shutil.copy(BIN / "pause", pause_root / "pause")
    size = write_archive(pause_root, into / "pause.tar", PAUSE_IMAGE, ["/pause"], user="65535:65535")
    print(f"  image {PAUSE_IMAGE}: layer {size / 2**20:.1f} MiB", flush=True)
    base_root = work / "base-root"
    loader = f"{LIBRARIES}/ld-linux-x86-64.so.2"
    libraries = tuple(f"{LIBRARIES}/{name}*" for name in HOG_LIBRARIES)  # a link and the file it names
    extract(base / "base.cpio", base_root, ("usr/bin/python3.11", "usr/lib/python3.11/*", loader, *libraries))
    hog = work / "hog-root"
    hog_root(base_root, hog)
    size = write_archive(
        hog,
        into / "hog.tar",
        HOG_IMAGE,
        ["python3", "-S", "-m", "workload"],
        user="65532:65532",
        workdir="/app",
        env=("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"),
    )
    print(f"  image {HOG_IMAGE}: layer {size / 2**20:.1f} MiB", flush=True)


@contextlib.contextmanager
def seeding_containerd(work: Path, root: Path) -> Iterator[Path]:
    """The cluster's containerd on this machine, for importing only; its socket, once it answers. Ended by its pid."""
    state = work / "state"
    state.mkdir(parents=True, exist_ok=True)
    socket = work / "containerd.sock"
    config = work / "config.toml"
    config.write_text(SEED_CONFIG.format(root=root, state=state, socket=socket))
    with (work / "containerd.log").open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "containerd"), "--config", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(ctr(socket, "version"), capture_output=True, check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"the seeding containerd did not answer; its log is {work / 'containerd.log'}")
            time.sleep(0.2)
        yield socket
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ctr(socket: Path, *arguments: str) -> list[str]:
    return [str(BIN / "ctr"), "--address", str(socket), *arguments]


def import_images(archives: list[Path], work: Path, root: Path) -> None:
    """The image archives (OCI or `docker save`) imported, unpacked, into a containerd root at `root`, which the guest
    copies to its own: under TCG the guest would take 15 to 20 s to import them."""
    started = time.monotonic()
    with seeding_containerd(work, root) as socket:
        for archive in archives:
            command = ctr(socket, "-n", K8S_NAMESPACE, "images", "import", "--local", "--discard-unpacked-layers")
            subprocess.run([*command, str(archive)], capture_output=True, check=True)
    # Started once more: the garbage collection at its start drops the unpacked layers' blobs (half the size).
    with seeding_containerd(work, root):
        time.sleep(2)
    print(f"  {len(archives)} images imported on this machine in {time.monotonic() - started:.1f} s", flush=True)


def seed(archives: Path, work: Path, into: Path) -> None:
    """The images imported into a containerd root at `into`/containerd, which the guest copies to its own, and the
    kubelet's serving certificate in `into`/pki (else the kubelet makes an RSA key at its start: 1 to 5 s under
    TCG). The archives are removed: the guest has nothing to import."""
    import_images([archives / f"{image}.tar" for image in ("pause", "hog")], work, into / "containerd")
    for archive in archives.glob("*.tar"):
        archive.unlink()
    # A certificate as the harness makes a node's (pki.py): signed by a CA of the run's own, with the guest's names.
    (work / "pki").mkdir()
    authority = Authority(work / "pki", common_name="oom-killer-v2node-ca")
    authority.issue("kubelet", "system:node:v2node", "system:nodes", server_names=("v2node", "10.0.2.15"))
    (into / "pki").mkdir()
    for name in ("kubelet.crt", "kubelet.key"):
        shutil.copy(work / "pki" / name, into / "pki" / name)


def stage(base: Path, work: Path) -> Path:
    """The payload's folder in `work`, with what every node needs: the agents, runc, the CNI plugins, ip(8) and the
    libraries the base lacks, the kernel modules and the guest's files. The caller adds the images."""
    payload = work / "payload"
    v2 = payload / "v2"
    for folder in ("v2/modules", "v2/cni", "v2/images", "usr/local/bin", "usr/sbin", "usr/bin", LIBRARIES):
        (payload / folder).mkdir(parents=True)
    payload.chmod(0o755)  # the guest's root takes this folder's mode
    for name in GUEST_FILES:
        shutil.copy(GUEST / name, v2 / name)
    (v2 / "init").chmod(0o755)
    shutil.copy(PROJECT / "tests/vm_driver.py", v2 / "vm_driver.py")  # init loads the modules with its loader
    modules = kernel_modules(base)
    for number, module in enumerate(MODULES, 1):  # numbered: init loads them in the order of their names
        name = Path(module).name
        shutil.copy(modules / f"{name}.ko", v2 / "modules" / f"{number}-{name}.ko")
    for plugin in CNI:
        shutil.copy(CNI_PLUGINS / plugin, v2 / "cni" / plugin)
    for agent in AGENTS:
        shutil.copy(BIN / agent, payload / "usr/local/bin" / agent)
    shutil.copy(RUNC, payload / "usr/sbin/runc")
    ip = Path(shutil.which("ip") or "/usr/sbin/ip")
    shutil.copy(ip, payload / "usr/bin/ip")
    listing = _run(["cpio", "-t", "--quiet", "-F", str(base / "base.cpio")]).splitlines()
    present = {Path(member).name for member in listing if member.startswith(f"{LIBRARIES}/")}
    for name, library in libraries_beyond([ip, RUNC], present).items():
        shutil.copy(library, payload / LIBRARIES / name)
    return payload


def finish(base: Path, work: Path, payload: Path) -> Path:
    """The payload appended to the base: the initrd's path (`work`/initrd.cpio); the staged folder is removed."""
    made = initrd_with(base, payload, work)
    sizes = {path.name: path.stat().st_size / 2**20 for path in (base / "base.cpio", work / "payload.cpio", made)}
    print("  " + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in sizes.items()), flush=True)
    (work / "payload.cpio").unlink()
    shutil.rmtree(payload)
    return made


def initrd(base: Path, work: Path, seed_on_host: bool) -> Path:
    """The probe's initrd: the node's payload with its own images (imported in the guest, or seeded here)."""
    payload = stage(base, work)
    v2 = payload / "v2"
    images(base, work, v2 / "images")
    if seed_on_host:
        seed(v2 / "images", work / "seed", v2 / "seed")
    return finish(base, work, payload)
