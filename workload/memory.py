"""Taking memory the kernel must really back, and reading what the process holds."""

from __future__ import annotations

import mmap
import os

from workload.kinds import memory_kind

MIB = 1 << 20
PAGE_SIZE = mmap.PAGESIZE


def allocate(size_bytes: int) -> mmap.mmap:
    """An anonymous private mapping of size_bytes with every page resident and written.

    MAP_PRIVATE, not mmap's default MAP_SHARED: shared anonymous memory is charged as shmem, not as the
    process's own. MAP_POPULATE asks the kernel to fault every page in one go (the fastest way there is);
    it is best effort, so one byte is still written to each page, which also keeps a page from being the
    shared zero page and makes the charge certain. Crossing the cgroup's limit here is what gets the
    process OOM-killed.
    """
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    block = mmap.mmap(-1, size_bytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    for offset in range(0, size_bytes, PAGE_SIZE):
        block[offset] = 0xA5
    return block


def rss_bytes() -> int:
    """The resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


# The hog's own files in MEMORY_DIR: this prefix, then the pid and the step. Only these are ever removed.
FILE_PREFIX = "oom-killer-hog-"
FILE_SUFFIX = ".mem"
# Filesystems whose pages live in memory and cannot be written back: never page cache the kernel can reclaim.
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs", "shm")
_CHUNK = b"\xa5" * MIB


def filesystem_of(path: str, mountinfo: str) -> str:
    """The type of the filesystem a path is on: the mount with the longest mount point above it ("" if none)."""
    best, fstype = -1, ""
    path = path.rstrip("/") + "/"
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) <= dash + 1:
            continue
        point = fields[4].encode().decode("unicode_escape") if "\\" in fields[4] else fields[4]
        point = point.rstrip("/") + "/"
        if path.startswith(point) and len(point) >= best:  # a later mount over the same point wins
            best, fstype = len(point), fields[dash + 1]
    return fstype


def memory_dir_problem(kind: str, fstype: str) -> str | None:
    """Why this kind cannot fill a directory on a filesystem of this type, or None when it can."""
    wants_memory = memory_kind(kind).needs_memory_filesystem
    if wants_memory and fstype != "tmpfs":
        return f"is on {fstype or 'an unknown filesystem'}, not a tmpfs: MEMORY_KIND={kind} fills memory, never a disk"
    if wants_memory is False and fstype in MEMORY_FILESYSTEMS:
        return f"is on {fstype}, whose pages cannot be reclaimed: MEMORY_KIND={kind} needs a disk filesystem"
    return None


def own_files(directory: str) -> list[str]:
    """The hog's files in directory (an earlier run's too), by name."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n.startswith(FILE_PREFIX) and n.endswith(FILE_SUFFIX)]


def remove_own_files(directory: str) -> int:
    """Remove the hog's files from directory; how many were removed. Nothing else there is touched."""
    removed = 0
    for path in own_files(directory):
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def write_file(directory: str, name: str, size_bytes: int, sync: bool) -> None:
    """A new file of size_bytes written in full; synced to disk when `sync` (so its page cache is clean and the
    kernel can drop it without waiting on writeback). A tmpfs file's pages are shmem, charged to this cgroup."""
    descriptor = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size_bytes
        while left > 0:
            left -= os.write(descriptor, _CHUNK[: min(left, MIB)])
        if sync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
