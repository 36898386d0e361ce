"""The blast-radius test's neighbour: a program that holds HOLD_MIB of memory and checks it, shipped into a pod as
its source (`python3 -S -c <this file>`: the hog's image has python3 and none of this project's packages), so
stdlib only.

It fills HOLD_MIB with a pattern and, every INTERVAL_MS, writes every page again and checks the whole against the
pattern's CRC-32, printing a logfmt line per pass with the pass's duration and the gap since the one before; a
mismatch is exit 3. SIGTERM ends it with 0.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import zlib
from pathlib import Path

MIB = 1 << 20
PAGE = 4096


def rss_mib() -> int | None:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) // 1024
    return None


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held, interval = int(os.environ["HOLD_MIB"]), int(os.environ["INTERVAL_MS"]) / 1000
    block = (bytes(range(1, 256)) * (MIB // 255 + 1))[:MIB]  # no zero byte, and no two pages alike
    expected = 0
    for _ in range(held):
        expected = zlib.crc32(block, expected)
    memory = bytearray(block) * held  # every page written
    del block
    print(f"event=start held_mib={held} interval_ms={int(interval * 1000)} rss_mib={rss_mib()}", flush=True)
    passes, last = 0, time.monotonic()
    while True:
        began = time.monotonic()
        memory[::PAGE] = memory[::PAGE]  # write every page again
        ok = zlib.crc32(memory) == expected  # and read every byte back
        ended = time.monotonic()
        passes += 1
        print(
            f"event=pass n={passes} t={time.time():.3f} pass_ms={(ended - began) * 1000:.1f}"
            f" gap_ms={(ended - last) * 1000:.1f} rss_mib={rss_mib()} ok={str(ok).lower()}",
            flush=True,
        )
        if not ok:
            sys.exit(3)
        last = ended
        time.sleep(interval)


if __name__ == "__main__":
    main()
