"""A Python base image made from Debian packages, for an engine that can pull from no registry: `make base-image`.

    sudo python3 -m oomtools.base_image [oom-killer-base:bookworm] [--suite bookworm] [--mirror URL]

debootstrap (root; Debian: apt-get install debootstrap) makes a minimal root with python3 from a Debian mirror (about
a minute), `docker import` makes it an image, and the image is checked to run python3 as a non-root user, as the
workload's does. Then: `make demo BASE_IMAGE=oom-killer-base:bookworm`. CI makes its base images with this too.

Stdlib only, and no import of the rest of the project: it runs with the system's python3, before any virtualenv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_TAG = "oom-killer-base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class Refused(Exception):
    """What stops it, in one line."""


def works(tag: str) -> bool:
    """The image runs python3 for a non-root user, with the stdlib the workload imports."""
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "65532:65532",
            tag,
            "python3",
            "-c",
            "import dataclasses",
        ],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def make(tag: str, suite: str, mirror: str, log: Path) -> None:
    if shutil.which("docker") is None:
        raise Refused("no docker command on PATH (it imports the image into your engine)")
    if shutil.which("debootstrap") is None:
        raise Refused("no debootstrap on PATH (Debian, Ubuntu: apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise Refused("debootstrap needs root: sudo make base-image (or sudo python3 -m oomtools.base_image)")
    with tempfile.TemporaryDirectory(prefix="oom-killer-rootfs.") as rootfs:
        print(f"base-image: debootstrap {suite} with python3 from {mirror} (about a minute; log: {log})", flush=True)
        with log.open("w") as output:
            made = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3", suite, rootfs, mirror],
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if made.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-1:] or ["(no output)"]
            raise Refused(f"debootstrap failed (exit {made.returncode}): {tail[0]} (all of it in {log})")
        Path(rootfs).chmod(0o755)  # it becomes the image's /: every user must traverse it
        print(f"base-image: docker import as {tag}", flush=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, check=False)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise Refused(f"docker import failed: {' '.join(imported.stderr.decode(errors='replace').split())}")
    if not works(tag):
        raise Refused(f"{tag} cannot run python3 as a non-root user")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make base-image", description=__doc__.split("\n\n")[0])
    parser.add_argument("tag", nargs="?", default=DEFAULT_TAG, help=f"the image's tag (default: {DEFAULT_TAG})")
    parser.add_argument("--suite", default="bookworm", help="the Debian release (default: bookworm, Python 3.11)")
    parser.add_argument("--mirror", default=DEFAULT_MIRROR, help=f"a Debian mirror (default: {DEFAULT_MIRROR})")
    args = parser.parse_args(argv)
    log = Path(tempfile.gettempdir()) / f"oom-killer-base-image.{os.getpid()}.log"
    try:
        make(args.tag, args.suite, args.mirror, log)
    except Refused as error:
        print(f"base-image: {error}", file=sys.stderr)
        return 1
    log.unlink(missing_ok=True)
    print(f"base-image: {args.tag} is ready: make demo BASE_IMAGE={args.tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
