"""The translation of the declared container into a container on Docker, as a kubelet would run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomtools import rehearsal
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


def test_which_base_image_wins_set_then_base_image_then_the_stack_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # The issue: which of baseImage and BASE_IMAGE wins was not said. docs/demo.md#no-registry says it; this holds it.
    def base(overrides: dict[str, str]) -> str:
        pod = stack_pod("dev", overrides)
        assert pod.build is not None
        return str(pod.build["build"]["args"]["BASE_IMAGE"])

    monkeypatch.setenv("BASE_IMAGE", "from-the-environment:1")
    assert base({}) == "from-the-environment:1"
    assert base({"baseImage": "from-set:1"}) == "from-set:1"
    monkeypatch.setattr(rehearsal, "stack_config", lambda _stack: {"baseImage": "from-the-stack-file:1"})
    assert base({}) == "from-the-environment:1"
    monkeypatch.delenv("BASE_IMAGE")
    assert base({}) == "from-the-stack-file:1"


def test_a_cpu_limit_below_the_kubelets_smallest_quota_is_raised_to_it(tmp_path: Path) -> None:
    # runc refused the cpuMillicores=5 (a 0.5 ms quota); the kubelet raises it to 1 ms a period, 10m.
    for millicores, expected in (("5", 10_000_000), ("10", 10_000_000), ("250", 250_000_000)):
        pod = stack_pod("dev", {"cpuMillicores": millicores})
        assert run_options(pod, tmp_path / "termination-log")["nano_cpus"] == expected


class _Made:
    """A container as the engine answers a create: removing it is all this test looks at."""

    name = "oom-killer-rehearsal-made"

    def __init__(self) -> None:
        self.removed = False

    def remove(self, force: bool) -> None:
        self.removed = force


def test_ctrl_c_while_the_engine_creates_the_container_removes_what_it_made(tmp_path: Path) -> None:
    # The race make test's Ctrl-C test met under load: the interrupt lands while the engine is making the
    # container. The engine makes it all the same, so the answer must not be dropped with the interrupt.
    import os
    import signal
    from types import SimpleNamespace

    made = _Made()

    def create_under_ctrl_c(**_options: object) -> _Made:
        os.kill(os.getpid(), signal.SIGINT)  # pressed now, delivered while the engine has not answered yet
        return made

    client = SimpleNamespace(containers=SimpleNamespace(create=create_under_ctrl_c))
    with pytest.raises(KeyboardInterrupt):
        rehearsal.create(client, stack_pod("dev", {}), tmp_path)  # type: ignore[arg-type]
    assert made.removed, "the container the engine made under the interrupt was left behind"
