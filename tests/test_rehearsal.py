"""The translation of the declared container into a container on Docker, as a kubelet would run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomtools.rehearsal import engine_time, memory_bytes, nano_cpus, run_options, stack_pod


def test_kubernetes_quantities_become_bytes_and_nano_cpus() -> None:
    assert memory_bytes("128Mi") == 128 << 20
    assert memory_bytes("1Gi") == 1 << 30
    assert memory_bytes("500M") == 500_000_000
    assert memory_bytes("1048576") == 1 << 20
    assert nano_cpus("100m") == 100_000_000
    assert nano_cpus("2") == 2_000_000_000
    with pytest.raises(ValueError, match=r"1\.5Gi"):
        memory_bytes("1.5Gi")


def test_the_declared_container_runs_locked_down_with_its_limit_and_no_swap(tmp_path: Path) -> None:
    pod = stack_pod("dev", {"memoryLimitMb": "64", "cpuMillicores": "250", "baseImage": ""})
    options = run_options(pod, tmp_path / "termination-log")
    assert options["image"] == pod.container["image"]
    assert options["mem_limit"] == options["memswap_limit"] == 64 << 20
    assert options["nano_cpus"] == 250_000_000
    assert options["user"] == "65532:65532"
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges"]
    assert options["network_mode"] == "none"
    assert options["volumes"] == {str(tmp_path / "termination-log"): {"bind": "/dev/termination-log", "mode": "rw"}}
    assert options["environment"]["MEMORY_INCREMENT_MB"] == pod.container["env"][0]["value"]


def test_the_engines_times_read_as_posix_seconds_and_its_zero_time_as_none() -> None:
    # Docker's log timestamps and State.StartedAt/FinishedAt: RFC 3339 with nanoseconds; "0001-01-01..." is unset.
    start, later = engine_time("2026-11-30T12:00:00Z"), engine_time("2026-11-30T12:00:07.250000000Z")
    assert start is not None
    assert later == start + 7.25
    assert engine_time("0001-01-01T00:00:00Z") is None
    assert engine_time("") is None
