"""`python -m tests.e2e.v2node`: make the node's initrd, boot it RUNS times one VM at a time, print the stage table.

Exit status: 0 when every run saw the kubelet report the hog OOMKilled with exit code 137, 1 when one did not,
2 when this machine cannot run it (not root, a tool or a cached input missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.harness.nodes import CNI_PLUGINS, RUNC
from tests.e2e.harness.state import BIN, ClusterError, build
from tests.e2e.v2node import payload, table, vm
from tests.kernel_vm import VmUnavailable, build_base, missing_tools

# How long the guest watches for the verdict (its watchdog powers it off 240 s later). A boot reaches the verdict in
# 40 to 90 s; the boot before the watch and the log dump after it need the rest of the host's timeout.
WATCH_SECONDS = 240
BEFORE_AND_AFTER_WATCH = 120


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.e2e.v2node",
        description="A real kubelet and containerd on cgroup v2, in Debian's kernel under QEMU (TCG): boot the node, "
        "run the hog as a static pod, time each stage to the kubelet's OOMKilled. A probe run by hand (issue 32), "
        "not a test. Needs root.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=2, help="boots, one at a time")
    parser.add_argument(
        "--seed",
        choices=("guest", "host"),
        default="guest",
        help="where the images are imported into containerd: in the VM, or on this machine before it boots",
    )
    parser.add_argument("--cpu", default="", help="QEMU's -cpu model (max is faster); empty: QEMU's default")
    parser.add_argument("--memory-mib", type=int, default=3072, help="the guest's memory (QEMU's -m)")
    parser.add_argument("--timeout", type=float, default=720, help="seconds before a boot is ended from here")
    parser.add_argument(
        "--forward-check",
        action="store_true",
        help="after the verdict, try QEMU's guestfwd (guest to this machine's loopback) and hostfwd (here to the "
        "guest kubelet's port 10250): the two ways stage 4 could join the harness's control plane",
    )
    parsed = parser.parse_args(argv)
    if parsed.runs < 1:
        parser.error("--runs must be at least 1")
    if parsed.timeout < BEFORE_AND_AFTER_WATCH + 30:
        parser.error(f"--timeout must leave the guest 30 s to watch: at least {BEFORE_AND_AFTER_WATCH + 30}")
    return parsed


def missing() -> list[str]:
    """What this machine lacks to make the initrd; the cached inputs are made when absent, not reported here."""
    tools = [*missing_tools(), *(tool for tool in ("ip", "ldd", "chroot") if not shutil.which(tool))]
    found = [f"{tool} (on PATH)" for tool in tools]
    found += [str(path) for path in (RUNC, *(CNI_PLUGINS / plugin for plugin in payload.CNI)) if not path.exists()]
    return found


def main(argv: list[str]) -> int:
    args = arguments(argv)
    if os.geteuid() != 0:
        print(
            "v2node: needs root (the hog image is compiled in a chroot, --seed host runs containerd)", file=sys.stderr
        )
        return 2
    lacking = missing()
    if lacking:
        packages = "qemu-system-x86 cpio debootstrap runc containernetworking-plugins iproute2"
        print(f"v2node: missing {', '.join(lacking)} (Debian: {packages})", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        base = build_base()  # the VM tests' kernel and root, made once per machine
        if not all((BIN / name).exists() for name in (*payload.AGENTS, "pause")):
            print(f"building the cluster's binaries into {BIN} (once per machine, as make e2e does)", flush=True)
            build()
    except (VmUnavailable, ClusterError) as error:
        print(f"v2node: {error}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="oom-killer-v2node-"))
    runs = work / "runs"
    try:
        where = "on this machine" if args.seed == "host" else "in the guest"
        print(f"making the initrd (images imported {where}) in {work}", flush=True)
        try:
            initrd = payload.initrd(base, work / "build", seed_on_host=args.seed == "host")
        except (VmUnavailable, ClusterError, subprocess.CalledProcessError, OSError) as error:
            print(f"v2node: making the initrd failed: {error}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
            return 2
        print(f"  ready in {time.monotonic() - started:.1f} s", flush=True)
        watch = int(min(WATCH_SECONDS, args.timeout - BEFORE_AND_AFTER_WATCH))
        for number in range(1, args.runs + 1):
            print(f"boot {number} of {args.runs}", flush=True)
            vm.boot(
                base / "vmlinuz",
                initrd,
                runs / str(number),
                memory_mib=args.memory_mib,
                cpu=args.cpu,
                timeout=args.timeout,
                watch=watch,
                forward_check=args.forward_check,
                label=f"seed={args.seed}",
            )
    finally:
        shutil.rmtree(work / "build", ignore_errors=True)  # the initrd and what made it: 0.3 to 0.8 GB
    done = sorted(runs.iterdir(), key=lambda run: int(run.name))
    report = f"{table.stage_table(done)}\n\n{table.breakdown_table(done)}\n"
    (runs / "table.md").write_text(report)
    print(f"\n{report}\nEach run's serial ports and summary.json are in {runs}")
    verdicts = [table.oom_killed(summary) for _, summary in table.summaries(done)]
    return 0 if len(verdicts) == args.runs and all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
