"""What the end-to-end tests share that is not a fixture: the closing report's lines (`fact`, `line`), one poll
(`until`), images as archives for the nodes, and the stack rendered and applied as `pulumi up` would. The
fixtures and hooks that use them are in conftest.py."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import FailToCreateError

from oomtools import verify
from oomtools.render import Rendered, render
from tests.e2e.harness.nodes import PAUSE_IMAGE
from workload import logfmt

FACTS: dict[str, str] = {}
LINES: list[str] = []


def fact(key: str, value: str) -> None:
    """One line of `make e2e`'s closing report: `e2e <key>=<value>`."""
    FACTS[key] = value


def line(text: str) -> None:
    """One line of the closing report that is one of many of a kind: `e2e <text>` (e.g. one per alert)."""
    LINES.append(text)


def until(what: str, ready: Callable[[], bool], timeout: float, detail: Callable[[], object] = lambda: "") -> None:
    """Poll `ready()` every half second; fail saying `what` did not happen in `timeout` s, and what `detail()` says."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f} s: {detail()}")


def workload_archive(engine: docker.DockerClient, reference: str) -> bytes:
    """`docker save` of the image by this very name (Image.save names it by its first tag, whichever that is)."""
    return b"".join(engine.api.get_image(reference))


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


@dataclass(frozen=True)
class Registry:
    address: str  # host:port, on loopback
    username: str
    password: str


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


def create_or_keep(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    """Create the object; one left by an earlier start in this cluster is kept (the same manifest)."""
    try:
        utils.create_from_dict(api, manifest)
    except FailToCreateError as failure:
        if not all(isinstance(e, ApiException) and e.status == 409 for e in failure.api_exceptions):
            raise


# The API groups of the custom resources a stack may declare (VPA's, the Prometheus Operator's): made through the
# custom objects API, which kubernetes.utils does not use.
CUSTOM_GROUPS = frozenset({"autoscaling.k8s.io", "monitoring.coreos.com"})


def apply_in_dependency_order(api: client.ApiClient, rendered: Rendered) -> list[str]:
    """Create the stack's Kubernetes objects with a Kubernetes client as the engine would, each after what it depends
    on (a custom resource, a VerticalPodAutoscaler say, through the custom objects API); return their kinds in the
    order created."""
    by_name = {resource.name: resource for resource in rendered.resources}
    applied = []
    for name in dependency_order(rendered):
        resource = by_name[name]
        if not resource.type.startswith("kubernetes:"):
            continue
        manifest = resource.inputs
        group, _, version = str(manifest["apiVersion"]).rpartition("/")
        if group in CUSTOM_GROUPS:
            plural = f"{str(manifest['kind']).lower()}s"
            namespace = manifest["metadata"]["namespace"]
            client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, namespace, plural, manifest)
        else:
            utils.create_from_dict(api, manifest)
        applied.append(str(manifest["kind"]))
    return applied


@dataclass
class Judged:
    """What verify said of a stack: its exit code, its lines (as fields), its stderr."""

    code: int
    lines: list[dict[str, str]]
    err: str

    @property
    def verdict(self) -> dict[str, str]:
        return self.lines[-1] if self.lines else {}

    @property
    def nodes(self) -> dict[str, dict[str, str]]:
        return {entry["node"]: entry for entry in self.lines if entry.get("event") == "node"}

    def kill_seconds(self) -> str:
        """Each container death's seconds from its start, as verify saw them."""
        return ",".join(entry["seconds_from_start"] for entry in self.lines if entry.get("event") == "death") or "none"

    def predicted_seconds(self) -> str:
        watch = next((entry for entry in self.lines if entry.get("event") == "watch"), {})
        return str(watch.get("predicted_seconds", "?"))


def stack_outputs(rendered: Rendered) -> str:
    """The outputs verify reads (`--outputs`), as `pulumi stack output --json` gives them: here, as the program
    exported them."""
    exports = rendered.exports
    keys = ("namespace", "workloadKind", "workloadName", "predictedSecondsToOomKill", "predictedOomKillStep")
    return json.dumps({key: exports.get(key) for key in keys})


def verify_stack(cluster: Any, rendered: Rendered) -> Judged:
    """`make verify` on the stack, as its user runs it for a fleet (`--kills 1`, 4 minutes at most)."""
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "--outputs",
        stack_outputs(rendered),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--timeout",
        "4m",
        "--kills",
        "1",
    ]
    code = verify.main(argv, out=out, err=err)
    return Judged(code, [logfmt.parse(text) for text in out.getvalue().splitlines()], err.getvalue())


# -- what the fixtures need ---------------------------------------------------------------------------------------


def pause_archive(engine: docker.DockerClient, pause_binary: Path) -> bytes:
    """The pod sandbox image, made here from the pause binary (no registry is reachable for the real one)."""
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(pause_binary, Path(context) / "pause")
        (Path(context) / "Dockerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        engine.images.build(path=context, tag=PAUSE_IMAGE, rm=True, pull=False)
    archive = workload_archive(engine, PAUSE_IMAGE)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert "manifest.json" in tar.getnames(), "docker save gave no manifest.json"
    return archive


LOCK = Path("/run/lock/oom-killer-e2e.lock")
_held: list[object] = []  # the lock's open file, held for the session


def one_cluster_at_a_time() -> None:
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


def registry_status(address: str) -> int | None:
    """The status of a registry's API root (401 when it wants a login); None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
