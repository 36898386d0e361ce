"""Taking memory the kernel must really back, and reading what the process holds."""

from __future__ import annotations

import mmap

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
