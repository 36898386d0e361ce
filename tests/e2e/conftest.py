"""The cluster fixture for every end-to-end test, and the `e2e ...` lines `make e2e` ends with (helpers are in
tests/e2e/support.py).

The cluster is built (cached per machine) and started once per session, the stack's image and a locally made
pause image are loaded into its containerd, and it is stopped at the end by the very command `E2E_KEEP=1` prints
(so that command is proven on every run), unless E2E_KEEP=1, when it is left running and the lines say how to
reach it and how to stop it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import bcrypt
import docker
import pytest
import yaml

from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import stack_config
from tests.e2e.cluster import Cluster, stop_command
from tests.e2e.harness.nodes import CNI_PLUGINS, RUNC
from tests.e2e.harness.state import BIN, ClusterError, build
from tests.e2e.resizing import Resizes
from tests.e2e.support import (
    FACTS,
    LINES,
    Deployed,
    Registry,
    apply_in_dependency_order,
    fact,
    one_cluster_at_a_time,
    pause_archive,
    registry_status,
    render_for_the_node,
    workload_archive,
)
from tests.e2e.v2scenarios import V2Scenarios
from tests.e2e.watching import Climb
from tests.servers import free_port
from tests.support import require

REGISTRY = "/usr/bin/docker-registry"
LAST = "test_alert_chain.py"


# Each module's wall time, from its first test's start to its last test's end (setup and teardown in it): what the
# CI budget is made of, and what the v2 node's thread runs beside (module_s, at the end).
MODULE_SPANS: dict[str, list[float]] = {}


def pytest_runtest_logstart(location: tuple[str, int | None, str]) -> None:
    MODULE_SPANS.setdefault(Path(location[0]).stem.removeprefix("test_"), [time.monotonic(), time.monotonic()])


def pytest_runtest_logfinish(location: tuple[str, int | None, str]) -> None:
    span = MODULE_SPANS.get(Path(location[0]).stem.removeprefix("test_"))
    if span is not None:
        span[1] = time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "tests/e2e/" in report.nodeid:
        reason = (report.longreprtext.strip().splitlines() or ["?"])[-1][:300]
        FACTS.setdefault(f"failed {report.nodeid.rsplit('::', 1)[-1]}", reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FACTS and not LINES:
        return
    terminalreporter.section("what make e2e found")
    if MODULE_SPANS:
        spans = " ".join(f"{name}:{end - begin:.0f}" for name, (begin, end) in MODULE_SPANS.items())
        terminalreporter.write_line(f"e2e module_s={spans}")
    for key, value in FACTS.items():
        separator = ": " if key.startswith("failed ") else "="
        terminalreporter.write_line(f"e2e {key}{separator}{value}")
    for text in LINES:
        terminalreporter.write_line(f"e2e {text}")


# The modules the watched climb (tests/e2e/watching.py) runs beside, started by their first test: none of them stops
# the API server, a kubelet or containerd, or counts what runs on the first node. They run first after the blast
# radius (which measures a neighbour's pace), in this order, and test_watching.py right after them, by when the climb
# (~2.5 minutes) is over: it costs make e2e its Headlamp and nothing else.
BESIDE_THE_CLIMB = ("test_cluster_oom.py", "test_make_verify_cluster.py", "test_pulumi_cli.py")
FIRST = ("test_blast_radius.py", *BESIDE_THE_CLIMB, "test_watching.py")
WATCHING: list[pytest.Item] = []  # a test of test_watching.py where the session runs one: the climb is for them
# The resizes (tests/e2e/resizing.py) run beside the same modules, where test_resize.py runs in the session: each is
# a minute of waiting on a hog's steps and the kubelet, and they neither stop anything nor count the node's pods.
RESIZING: list[pytest.Item] = []
# The cgroup v2 node's scenarios (tests/e2e/v2scenarios.py) start with the first module after test_fleet.py (whose
# verdicts list every node) and run beside every module after it, the alert chain's too: test_v2node.py comes last.
# Their kills are the guest kernel's, not this machine's, so they take nothing from the chain's kernel log. Judged
# before the chain, they kept make e2e waiting 107 s (a CI run: 977 s in all, over the 15 minutes).
V2NODE_FROM = "test_least_privilege.py"
V2NODE_LAST = "test_v2node.py"
V2NODE: list[pytest.Item] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """FIRST first (above), and the alert chain last but the v2 node's judging (above). cAdvisor's
    `container_oom_events_total` comes from the kubelet reading the kernel's log, whose `oom-kill:` lines the kernel
    prints under a rate limit the whole machine shares (10 in 5 s): the chain's kills must be the machine's only ones,
    and in CI `make test`, which kills in cgroups of its own, runs beside `make e2e` for the first minutes
    (test_blast_radius.py measured the limit: 5 of 19 kills printed beside an OOM storm)."""

    def place(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name == V2NODE_LAST:
            return (3, 0)
        if name == LAST:
            return (2, 0)
        return (0, FIRST.index(name)) if name in FIRST else (1, 0)

    items.sort(key=place)  # stable: the rest keep their order
    WATCHING[:] = [item for item in items if item.path.name == "test_watching.py"][:1]
    RESIZING[:] = [item for item in items if item.path.name == "test_resize.py"][:1]
    V2NODE[:] = [item for item in items if item.path.name == V2NODE_LAST][:1]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Wait for the machine's cluster before the first test, where no test's timeout runs yet."""
    if any("cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        one_cluster_at_a_time()


@pytest.fixture(scope="session")
def climb(cluster: Cluster) -> Iterator[Climb]:
    """The watched climb, made here and started by the first test of BESIDE_THE_CLIMB (or by test_watching.py where
    none of them runs); closed by test_watching.py, or at the session's end where it did not run."""
    climbing = Climb(cluster)  # the cluster fixture asked for the engine: it answers
    yield climbing
    climbing.close()


@pytest.fixture(scope="session")
def resizes(cluster: Cluster, engine: docker.DockerClient) -> Iterator[Resizes]:
    """The resizes, made here and started by the first test of BESIDE_THE_CLIMB (or by test_resize.py where none of
    them runs); their namespaces deleted at the session's end."""
    resizing = Resizes(cluster, engine)
    yield resizing
    resizing.close()


@pytest.fixture(scope="session")
def v2node(cluster: Cluster, engine: docker.DockerClient) -> Iterator[V2Scenarios]:
    """The cgroup v2 node's scenarios, made here and started by the first test of V2NODE_FROM (or by test_v2node.py
    where it does not run); the node and the stacks' namespaces removed at the session's end."""
    scenarios = V2Scenarios(cluster, engine)
    yield scenarios
    scenarios.close()


@pytest.fixture(autouse=True)
def _the_climb_beside(request: pytest.FixtureRequest) -> None:
    if WATCHING and request.path.name in BESIDE_THE_CLIMB:
        climbing: Climb = request.getfixturevalue("climb")
        climbing.start()
    if RESIZING and request.path.name in BESIDE_THE_CLIMB:
        resizing: Resizes = request.getfixturevalue("resizes")
        resizing.start()
    if V2NODE and request.path.name == V2NODE_FROM:
        scenarios: V2Scenarios = request.getfixturevalue("v2node")
        scenarios.start()


@pytest.fixture(scope="session")
def cluster(engine: docker.DockerClient) -> Iterator[Cluster]:
    require(os.geteuid() == 0, "the test cluster needs root (cgroups, mounts, a bridge)")
    require(RUNC.exists(), f"no runc at {RUNC} (apt-get install runc)")
    require((CNI_PLUGINS / "bridge").exists(), f"no CNI plugins in {CNI_PLUGINS} (containernetworking-plugins)")
    require(shutil.which("go") is not None or (BIN / "kubelet").exists(), "no Go toolchain to build the cluster")
    build()
    one_cluster_at_a_time()
    workdir = Path(tempfile.mkdtemp(prefix="oom-killer-e2e."))
    started = Cluster(workdir)
    keep = os.environ.get("E2E_KEEP") == "1"
    try:
        started.start()
        pause = pause_archive(engine, BIN / "pause")
        started.load_image(pause)
        started.node_images.append(pause)  # a node that joins later gets it too: no pod starts without it
        started.wait_ready()
    except ClusterError:
        started.stop()
        raise
    yield started
    if keep:
        fact("kubeconfig", str(started.kubeconfig))
        fact("stop", stop_command(workdir))
        return
    # Stopped by the line a kept cluster's user is given, run as they would run it: from another folder, in another
    # process that knows the cluster only by its state file.
    began = time.monotonic()
    stopped = subprocess.run(  # noqa: S602 (our own line, as a user pastes it)
        stop_command(workdir), shell=True, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False
    )
    fact("stop_s", f"{time.monotonic() - began:.1f}")
    if stopped.returncode != 0:
        Cluster(workdir).stop()  # whatever the line left, so that the next session finds the machine as it was
    assert stopped.returncode == 0, f"the printed stop command failed ({stopped.returncode}):\n{stopped.stderr[-3000:]}"
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def deployed(cluster: Cluster, engine: docker.DockerClient) -> Iterator[Deployed]:
    """The objects `pulumi up` would send for the dev stack (rendered under mocks), applied in dependency order
    with a Kubernetes client; the image built as the stack builds it and loaded as a kind user loads it."""
    rendered = render_for_the_node(stack_config("dev"), "dev")
    tag = build_image(engine, declared_pod(rendered))
    cluster.load_image(workload_archive(engine, tag))

    api = cluster.api()
    applied = apply_in_dependency_order(api, rendered)
    deployment = rendered.one("kubernetes:apps/v1:Deployment").inputs["spec"]
    namespace = str(rendered.exports["namespace"])
    yield Deployed(
        rendered,
        api,
        namespace,
        ",".join(f"{key}={value}" for key, value in deployment["selector"]["matchLabels"].items()),
        int(deployment["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"].removesuffix("Mi")),
        applied,
    )
    if os.environ.get("E2E_KEEP") == "1":
        fact("namespace", namespace)


@pytest.fixture(scope="session")
def registry(cluster: Cluster) -> Iterator[Registry]:
    """A container registry on loopback (Debian's docker-registry, the CNCF distribution registry) that requires a
    login for every push and pull (htpasswd, as a private registry does), and that the node reaches over plain
    HTTP, as it would a user's registry."""
    require(Path(REGISTRY).exists(), f"no {REGISTRY} (apt-get install docker-registry)")
    port = free_port()
    workdir = cluster.workdir / "registry"
    workdir.mkdir()
    username, password = "oom-killer-e2e", secrets.token_urlsafe(16)
    (workdir / "htpasswd").write_text(f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"htpasswd": {"realm": "oom-killer-e2e", "path": str(workdir / "htpasswd")}},
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    with (workdir / "registry.log").open("ab") as log:
        process = subprocess.Popen(
            [REGISTRY, "serve", str(workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while registry_status(address) != HTTPStatus.UNAUTHORIZED:  # up, and asking for a login
            assert process.poll() is None, (workdir / "registry.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the registry did not answer in 30 s"
            time.sleep(0.2)
        cluster.trust_registry(address)
        yield Registry(address, username, password)
    finally:
        process.terminate()
        process.wait(timeout=10)
