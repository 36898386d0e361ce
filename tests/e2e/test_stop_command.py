"""The stop line `make e2e E2E_KEEP=1` prints works from any folder, and the state file the harness writes loads as
that line loads it (no cluster needed: these run in make test; the cluster fixture runs the line at the end of every
make e2e)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import NODE, Cluster, stop_command
from tests.e2e.harness import control_plane
from tests.e2e.harness.nodes import Node, NodeSpec, free_address
from tests.e2e.harness.state import Processes

POOL = ("oom-killer-e2e-pool", "1024Mi", (("oom-killer.test/pool", "tainted", "NoSchedule"),))


def test_the_printed_stop_command_finds_its_module_from_any_folder(tmp_path: Path) -> None:
    workdir = tmp_path / "oom-killer-e2e.abcd"
    command = stop_command(workdir)
    stop = f" -m tests.e2e.cluster stop {shlex.quote(str(workdir))}"
    assert command.endswith(stop), command
    # Run all of it but the stop itself (which would act on this machine's cgroups), from elsewhere: the module is
    # found, and says how it is used, instead of "No module named 'tests'".
    probe = command.removesuffix(" stop " + shlex.quote(str(workdir)))
    result = subprocess.run(probe, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)  # noqa: S602 (our own line, as a user pastes it)
    assert result.returncode == 2, result.stderr
    assert "usage: " in result.stderr, result.stderr


def _no_process(processes: Processes, name: str, *_argv_and_env: object) -> None:
    """Processes.spawn's bookkeeping without the process: a pid no process has, saved as spawn saves one."""
    processes.state.pids[name] = 4_000_000 + len(processes.state.pids)  # above any pid_max: never a real process
    processes.state.save()


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """A kept cluster's state file as the harness writes it: the control plane's etcd and API server steps and two
    nodes joined, with every process's start and wait left out, and each node doing only what records it (its
    kubelet's configuration and ports)."""
    monkeypatch.setattr(Processes, "spawn", _no_process)
    monkeypatch.setattr(Processes, "wait", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(Node, "start", lambda node: node.write_kubelet_config())
    cluster = Cluster(tmp_path)
    for step in (control_plane.etcd, control_plane.apiserver):
        step(cluster.context)
    cluster.add_node(NODE)
    cluster.add_node(*POOL)
    return cluster


def test_the_state_a_kept_cluster_wrote_loads_as_the_stop_command_loads_it(written: Cluster, tmp_path: Path) -> None:
    loaded = Cluster(tmp_path)  # what `python -m tests.e2e.cluster stop DIR` does first
    assert {name: node.spec for name, node in loaded.nodes.items()} == {
        name: node.spec for name, node in written.nodes.items()
    }
    assert loaded.nodes[POOL[0]].spec.taints == POOL[2]
    assert loaded.kubelets() == written.kubelets()
    assert loaded.context.state.pids == written.context.state.pids
    assert set(loaded.context.state.pids) == {"etcd", "kube-apiserver"}


def test_etcd_and_the_api_servers_address_are_saved_for_a_restart(written: Cluster, tmp_path: Path) -> None:
    loaded = Cluster(tmp_path)
    assert loaded.etcd_url.startswith("http://127.0.0.1:"), loaded.etcd_url
    assert loaded.etcd_url == written.etcd_url
    assert loaded.server == written.server
    assert loaded.server.startswith("https://127.0.0.1:")


def test_a_state_file_from_before_the_split_still_loads(tmp_path: Path) -> None:
    """A cluster kept by the harness before it was split wrote each node's spec and its own keys side by side."""
    spec = NodeSpec(NODE, "10.244.0.1", "10.244.0.0/24", NODE)
    record: dict[str, Any] = {
        **spec.as_state(),
        "containerd_socket": str(tmp_path / "nodes" / NODE / "containerd" / "containerd.sock"),
        "kubelet_port": 40001,
        "healthz_port": 40002,
    }
    state = {"pids": {"etcd": 4_000_001}, "tunables": {}, "nodes": {NODE: record}, "server": "https://127.0.0.1:1"}
    (tmp_path / "state.json").write_text(json.dumps(state))
    loaded = Cluster(tmp_path)
    assert loaded.first.spec == spec
    assert loaded.kubelets() == ["10.244.0.1:40001"]


def test_nodes_get_the_first_address_and_subnet_no_other_node_has() -> None:
    first = NodeSpec("a", *free_address([]), "a")
    assert (first.ip, first.pod_subnet) == ("10.244.0.1", "10.244.0.0/24")
    second = NodeSpec("b", *free_address([first]), "b")
    assert (second.ip, second.pod_subnet) == ("10.244.0.2", "10.244.1.0/24")
    third = NodeSpec("c", *free_address([first, second]), "c")
    assert (third.ip, third.pod_subnet) == ("10.244.0.3", "10.244.2.0/24")
    assert free_address([first, third]) == (second.ip, second.pod_subnet)  # a removed node's address is free again
