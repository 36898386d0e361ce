"""One boot of the node under QEMU (TCG), timed from the host: each `MARK` line the guest writes on its results
serial port is stamped with host seconds since QEMU started, so the stages before the guest's clock starts (firmware,
decompressing the kernel) show too. QEMU's RSS is sampled every 0.25 s, and its largest mappings are read once the
verdict is in (what stage 4 would budget per VM). The boot is ended by its pid after the timeout.

Networking is QEMU's user networking with `restrict=on`: the guest reaches nothing outside. With `forward_check`
it also tries the two forwards stage 4 could join a control plane through: `guestfwd` from the guest to a server on
this machine's loopback, and `hostfwd` from here to the guest kubelet's authenticated port.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests import kernel_vm
from tests.servers import free_port

SMP = 2
API_ADDRESS = "10.0.2.100:6443"  # where the guest looks for an API server (guestfwd); as a kubeconfig would name it


def rss_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (the peak) of a process, 0 once it is gone."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) if value.split() and value.split()[0].isdigit() else 0
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def largest_mappings(pid: int, count: int = 30) -> list[dict[str, object]]:
    """QEMU's mappings with the most resident memory: guest RAM, TCG's code buffer, the initrd it keeps mapped."""
    found: list[dict[str, object]] = []
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                start, end = (int(address, 16) for address in fields[0].split("-"))
                found.append({"size_mib": round((end - start) / 2**20), "name": " ".join(fields[5:]) or "[anon]"})
            elif fields and fields[0] == "Rss:" and found:
                found[-1]["rss_mib"] = round(int(fields[1]) / 1024)
    return sorted(found, key=lambda mapping: -int(str(mapping.get("rss_mib", 0))))[:count]


class HostLoopbackHandler(http.server.BaseHTTPRequestHandler):
    """Stands in for an API server bound to loopback only, as the harness's is: the guest reads one line from it."""

    def do_GET(self) -> None:
        body = b"host-loopback-server-reached\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the guest's own line says whether it got through."""


@contextlib.contextmanager
def host_loopback_server() -> Iterator[int]:
    """The stand-in on 127.0.0.1, on a port of its own; the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostLoopbackHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def host_to_kubelet(port: int) -> dict[str, object]:
    """GET the guest kubelet's /pods through the hostfwd: TLS with the guest's certificate, not verified (only
    reaching it is the question)."""
    started = time.monotonic()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/pods", context=context, timeout=5) as got:
            pods = json.loads(got.read())
        names = [item["metadata"]["name"] for item in pods.get("items", [])]
        return {"ok": True, "pods": names, "seconds": round(time.monotonic() - started, 2)}
    except (OSError, ValueError, KeyError) as error:  # reported as found, for the report
        return {"ok": False, "error": repr(error), "seconds": round(time.monotonic() - started, 2)}


def qemu_command(
    kernel: Path, initrd: Path, run: Path, memory_mib: int, cpu: str, watch: int, forwards: dict[str, int] | None
) -> list[str]:
    append = f"console=ttyS0 rdinit=/v2/init panic=-1 quiet v2node.watch={watch}"
    nic = "user,model=e1000,restrict=on"
    if forwards is not None:
        append += " v2node.fwd=1"
        nic += f",hostfwd=tcp:127.0.0.1:{forwards['kubelet']}-:10250"
        nic += f",guestfwd=tcp:{API_ADDRESS}-tcp:127.0.0.1:{forwards['api']}"
    return [
        *kernel_vm.qemu_command(kernel, initrd, append, memory_mib, SMP, cpu),
        "-nic",
        nic,
        # console (kernel messages), results (marks and the RESULT line), logs (containerd's and the kubelet's)
        "-serial",
        f"file:{run / 'console.txt'}",
        "-serial",
        f"file:{run / 'results.txt'}",
        "-serial",
        f"file:{run / 'logs.txt'}",
    ]


class Marks:
    """Reads the results port's file as QEMU writes it, stamping each new MARK line with host seconds."""

    def __init__(self, results: Path) -> None:
        self.results = results
        self.offset = 0
        self.pending = ""
        self.found: dict[str, dict[str, Any]] = {}

    def read(self, now: float) -> list[str]:
        """The names of the marks that arrived since the last read; each printed as it comes."""
        if not self.results.exists():
            return []
        with self.results.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        *lines, self.pending = (self.pending + chunk.decode(errors="replace")).split("\n")
        new = []
        for line in lines:
            parts = line.rstrip("\r").split()
            if len(parts) >= 3 and parts[0] == "MARK":
                name, guest, extra = parts[1], float(parts[2]), " ".join(parts[3:])
                self.found[name] = {"guest": guest, "host": round(now, 2), "extra": extra}
                new.append(name)
                print(f"  {now:7.1f}s host  {guest:7.1f}s guest  {name} {extra}".rstrip(), flush=True)
        return new


def boot(
    kernel: Path,
    initrd: Path,
    run: Path,
    *,
    memory_mib: int,
    cpu: str,
    timeout: float,
    watch: int,
    forward_check: bool,
    label: str,
) -> dict[str, Any]:
    """Boot once, writing the serial ports' files and summary.json in `run`; the summary."""
    run.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        forwards = None
        if forward_check:
            forwards = {"kubelet": free_port(), "api": stack.enter_context(host_loopback_server())}
        command = qemu_command(kernel, initrd, run, memory_mib, cpu, watch, forwards)
        (run / "command.txt").write_text(" ".join(command) + "\n")
        extra: dict[str, object] = {}
        load_before = os.getloadavg()
        marks = Marks(run / "results.txt")
        samples: list[tuple[float, int]] = []
        peak_kib = 0
        timed_out = False
        started = time.monotonic()
        output = stack.enter_context((run / "qemu.txt").open("wb"))
        qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        try:
            while True:
                now = time.monotonic() - started
                rss, peak = rss_kib(qemu.pid)
                if rss:
                    samples.append((round(now, 1), rss))
                    peak_kib = max(peak_kib, peak)
                if "watch_done" in marks.read(now):
                    extra["qemu_mappings_at_watch_done"] = largest_mappings(qemu.pid)
                    if forwards is not None:
                        extra["host_to_guest_kubelet"] = host_to_kubelet(forwards["kubelet"])
                        print(f"  host -> guest kubelet: {extra['host_to_guest_kubelet']}", flush=True)
                if qemu.poll() is not None:
                    break
                if now > timeout:
                    timed_out = True
                    break
                time.sleep(0.25)
        finally:
            if qemu.poll() is None:
                qemu.terminate()
                try:
                    qemu.wait(10)
                except subprocess.TimeoutExpired:
                    qemu.kill()
                    qemu.wait()
        seconds = time.monotonic() - started
        marks.read(seconds)  # what the guest wrote between the last poll and its power-off
    summary = {
        "wall_seconds": round(seconds, 1),
        "timed_out": timed_out,
        "qemu_exit": qemu.returncode,
        "qemu_output": (run / "qemu.txt").read_text(errors="replace")[-2000:],
        "marks": marks.found,
        "qemu_rss_peak_mib": round(peak_kib / 1024),
        "qemu_rss_at": {f"{at}": round(kib / 1024) for at, kib in samples[:: max(1, len(samples) // 20)]},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "memory_mib": memory_mib,
        "smp": SMP,
        "cpu": cpu or "default",
        "label": label,
        **extra,
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"  done in {seconds:.1f} s (timed out: {timed_out}), QEMU RSS peak {peak_kib / 1024:.0f} MiB", flush=True)
    return summary
