"""The cluster fixture for every end-to-end test, and the `e2e ...` lines `make e2e` ends with.

The cluster is built (cached per machine) and started once per session, the stack's image and a locally made
pause image are loaded into its containerd, and it is stopped at the end unless E2E_KEEP=1, when it is left
running and the lines say how to reach it and how to stop it.
"""

from __future__ import annotations

import fcntl
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import bcrypt
import docker
import docker.errors
import pytest
import yaml
from kubernetes import client, utils

from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import Rendered, render, stack_config
from tests.e2e.cluster import (
    BIN,
    CNI_PLUGINS,
    PAUSE_IMAGE,
    RUNC,
    Cluster,
    ClusterError,
    build,
    stop_command,
)
from tests.servers import free_port
from tests.support import require

REGISTRY = "/usr/bin/docker-registry"

FACTS: dict[str, str] = {}
LINES: list[str] = []


def fact(key: str, value: str) -> None:
    """One line of `make e2e`'s closing report: `e2e <key>=<value>`."""
    FACTS[key] = value


def line(text: str) -> None:
    """One line of the closing report that is one of many of a kind: `e2e <text>` (e.g. one per alert)."""
    LINES.append(text)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "tests/e2e/" in report.nodeid:
        reason = (report.longreprtext.strip().splitlines() or ["?"])[-1][:300]
        FACTS.setdefault(f"failed {report.nodeid.rsplit('::', 1)[-1]}", reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FACTS and not LINES:
        return
    terminalreporter.section("what make e2e found")
    for key, value in FACTS.items():
        separator = ": " if key.startswith("failed ") else "="
        terminalreporter.write_line(f"e2e {key}{separator}{value}")
    for text in LINES:
        terminalreporter.write_line(f"e2e {text}")


def until(what: str, ready: Callable[[], bool], timeout: float, detail: Callable[[], object] = lambda: "") -> None:
    """Poll `ready()` every half second; fail saying `what` did not happen in `timeout` s, and what `detail()` says."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f} s: {detail()}")


def _pause_archive(client: docker.DockerClient) -> bytes:
    """The pod sandbox image, made here from the pause binary (no registry is reachable for the real one)."""
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(BIN / "pause", Path(context) / "pause")
        (Path(context) / "Dockerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        client.images.build(path=context, tag=PAUSE_IMAGE, rm=True, pull=False)
    return workload_archive(client, PAUSE_IMAGE)


def workload_archive(client: docker.DockerClient, reference: str) -> bytes:
    """`docker save` of the image by this very name (Image.save names it by its first tag, whichever that is)."""
    return b"".join(client.api.get_image(reference))


def _check_archive(archive: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert "manifest.json" in tar.getnames(), "docker save gave no manifest.json"


LOCK = Path("/run/lock/oom-killer-e2e.lock")
_held: list[object] = []  # the lock's open file, held for the session


def _one_cluster_at_a_time() -> None:
    """The cluster's bridge, node names and addresses are the machine's: a second session (a second make e2e, or
    one test file run beside it) waits here for the first to end, rather than breaking it."""
    if _held:
        return
    handle = LOCK.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"e2e: another session holds the test cluster ({LOCK}); waiting for it to end", flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    _held.append(handle)


LAST = "test_alert_chain.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The alert chain runs last. cAdvisor's `container_oom_events_total` comes from the kubelet reading the kernel's
    log, whose `oom-kill:` lines the kernel prints under a rate limit the whole machine shares (10 in 5 s): the
    chain's kills must be the machine's only ones, and in CI `make test`, which kills in cgroups of its own, runs
    beside `make e2e` for the first minutes (test_blast_radius.py measured the limit: 5 of 19 kills printed beside
    an OOM storm)."""
    items.sort(key=lambda item: item.path.name == LAST)  # stable: the rest keep their order


def pytest_collection_finish(session: pytest.Session) -> None:
    """Wait for the machine's cluster before the first test, where no test's timeout runs yet."""
    if any("cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        _one_cluster_at_a_time()


@pytest.fixture(scope="session")
def cluster(engine: docker.DockerClient) -> Iterator[Cluster]:
    require(os.geteuid() == 0, "the test cluster needs root (cgroups, mounts, a bridge)")
    require(RUNC.exists(), f"no runc at {RUNC} (apt-get install runc)")
    require((CNI_PLUGINS / "bridge").exists(), f"no CNI plugins in {CNI_PLUGINS} (containernetworking-plugins)")
    require(shutil.which("go") is not None or (BIN / "kubelet").exists(), "no Go toolchain to build the cluster")
    build()
    _one_cluster_at_a_time()
    workdir = Path(tempfile.mkdtemp(prefix="oom-killer-e2e."))
    started = Cluster(workdir)
    keep = os.environ.get("E2E_KEEP") == "1"
    try:
        started.start()
        pause = _pause_archive(engine)
        _check_archive(pause)
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
    problems = started.stop()
    assert not problems, f"the cluster left things behind: {problems}"
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Deployed:
    """The dev stack's objects as applied to the test cluster: its pod is OOM-killed over and over from then on."""

    rendered: Rendered
    api: client.ApiClient
    namespace: str
    selector: str
    limit_mib: int
    applied_order: list[str] = field(default_factory=list)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


def render_for_the_node(config: dict[str, str], stack_name: str) -> Rendered:
    """The stack under mocks with this config, built FROM BASE_IMAGE where that is set (CI's Debian-made base)."""
    if os.environ.get("BASE_IMAGE"):
        config = {**config, "baseImage": os.environ["BASE_IMAGE"]}
    return render(config, stack_name=stack_name)


def dependency_order(rendered: Rendered) -> list[str]:
    """Resource names so that each comes after what it depends on (as the engine would create them)."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dependency in rendered.dependencies.get(name, []):
            visit(dependency)
        if name not in order:
            order.append(name)

    for resource in rendered.kubernetes_resources():  # the program's order, not the mock's: ties come out the same
        visit(resource.name)
    return order


def apply_in_dependency_order(api: client.ApiClient, rendered: Rendered) -> list[str]:
    """Create the stack's Kubernetes objects with a Kubernetes client as the engine would, each after what it depends
    on; return their kinds in the order created."""
    by_name = {resource.name: resource for resource in rendered.resources}
    applied = []
    for name in dependency_order(rendered):
        resource = by_name[name]
        if resource.type.startswith("kubernetes:"):
            utils.create_from_dict(api, resource.inputs)
            applied.append(str(resource.inputs["kind"]))
    return applied


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


@dataclass(frozen=True)
class Registry:
    address: str  # host:port, on loopback
    username: str
    password: str


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
        while _registry_status(address) != HTTPStatus.UNAUTHORIZED:  # up, and asking for a login
            assert process.poll() is None, (workdir / "registry.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the registry did not answer in 30 s"
            time.sleep(0.2)
        cluster.trust_registry(address)
        yield Registry(address, username, password)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _registry_status(address: str) -> int | None:
    """The status of the registry's API root (401 when it wants a login); None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
