"""A memory limit changed in place on the real kubelet (issue 31, part 3): `oom-killer resize`, as VPA's updater
patches a pod, against a hog that holds at 75% of its limit. Each of the three outcomes, in the order a user meets
them on one pod:

- killed: the limit lowered under the hog's ceiling while it grows, above what it is charged: the kubelet applies
  it, and the hog's steps reach it (OOMKilled, 137), in the steps predicted; its restart keeps the new limit;
- refused: lowered below what the hog, now holding at 75% of the new limit, is charged: the kubelet's check
  refuses it (PodResizeInProgress, reason Error, `cannot decrease memory limits`), and it is withdrawn;
- held: lowered, but above that charge: applied, and the hog runs on under it.

And the pod's own limit (limitScope=pod, `spec.resources`, resized in place under the gate
InPlacePodLevelResourcesVerticalScaling, beta and on from 1.36): lowered while the hog grows, and its kill.

Proven on the e2e node: the kubelet v1.37 on cgroup v1."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from kubernetes import client

from oomtools import resize
from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import stack_config
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.support import apply_in_dependency_order, line, render_for_the_node, until, workload_archive
from workload import logfmt

pytestmark = pytest.mark.e2e

NAMESPACE = "oom-killer-resize"
POD_SCOPE_NAMESPACE = "oom-killer-resize-pod"
# 8 MiB every 1.5 s up to 75% of the limit: a ceiling to hold at, and steps slow enough to patch between.
SETTINGS = {"memoryLimitMb": "128", "memoryIncrementMb": "8", "incrementIntervalMs": "1500", "memoryCeilingPct": "75"}
KILL_TO_MIB = 88  # under the 96 MiB it would hold at: its steps reach it
# After the kill it holds at 75% of 88 MiB (66 MiB charged).
REFUSED_TO_MIB = 48
HELD_TO_MIB = 76


@pytest.fixture(autouse=True, scope="module")
def _gone_after(cluster: Cluster) -> Iterator[None]:
    """The module's stacks go with it: later modules count what runs on the node."""
    yield
    core = client.CoreV1Api(cluster.api())
    for namespace in (NAMESPACE, POD_SCOPE_NAMESPACE):
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(namespace)


def deploy(cluster: Cluster, engine: docker.DockerClient, namespace: str, **settings: str) -> dict[str, Any]:
    """The stack with these settings in a namespace of its own; its outputs, as `pulumi stack output` gives them."""
    config = {**stack_config("dev"), **SETTINGS, **settings, "namespace": namespace}
    rendered = render_for_the_node(config, namespace)
    cluster.load_image(workload_archive(engine, build_image(engine, declared_pod(rendered))))
    apply_in_dependency_order(cluster.api(), rendered)
    return {key: rendered.exports.get(key) for key in ("namespace", "workloadKind", "workloadName")}


Result = tuple[int, list[dict[str, str]], str]


def run_resize(cluster: Cluster, outputs: dict[str, Any], *args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    argv = ["--outputs", json.dumps(outputs), "--kubeconfig", str(cluster.kubeconfig), "--timeout", "3m", *args]
    code = resize.main(argv, out=out, err=err)
    return code, [logfmt.parse(text) for text in out.getvalue().splitlines()], err.getvalue()


@pytest.fixture(scope="module")
def pod_scope_killed(cluster: Cluster, engine: docker.DockerClient) -> Iterator[Callable[[], Result]]:
    """The pod-scoped stack, deployed first and resized in a thread beside the container-scoped sequence (its climb
    and kill are a minute of waiting); its result, once the thread is done."""
    outputs = deploy(cluster, engine, POD_SCOPE_NAMESPACE, limitScope="pod")
    found: list[Result] = []
    thread = threading.Thread(target=lambda: found.append(run_resize(cluster, outputs, "--to-mb", str(KILL_TO_MIB))))
    thread.start()

    def result() -> Result:
        thread.join()
        return found[0]

    yield result
    thread.join()


def said(lines: list[dict[str, str]], event: str) -> dict[str, str]:
    found = [fields for fields in lines if fields.get("event") == event]
    assert found, (event, lines)
    return found[-1]


def report(lines: list[dict[str, str]]) -> None:
    verdict = lines[-1]
    line(" ".join(f"{key}={value}" for key, value in verdict.items() if key != "failed" or value != "none"))


@pytest.mark.timeout(420)
@pytest.mark.usefixtures("pod_scope_killed")  # started first, to run beside
def test_a_limit_changed_in_place_is_killed_refused_or_held_as_predicted(
    cluster: Cluster, engine: docker.DockerClient
) -> None:
    outputs = deploy(cluster, engine, NAMESPACE)
    api = cluster.api()
    core = client.CoreV1Api(api)

    # Killed: patched right after a step, at 88 MiB, which its steps to 96 reach.
    code, lines, err = run_resize(cluster, outputs, "--to-mb", str(KILL_TO_MIB))
    report(lines)
    assert code == resize.EXIT_AS_PREDICTED, (lines, err)
    verdict = lines[-1]
    assert (verdict["resize"], verdict["predicted"], verdict["verdict"]) == ("killed", "killed", "as-predicted")
    assert (verdict["reason"], verdict["exit_code"]) == ("OOMKilled", "137")
    assert said(lines, "applied")["limit_mib"] == str(KILL_TO_MIB)

    def the_pod() -> dict[str, Any]:
        (pod,) = as_json(api, core.list_namespaced_pod(NAMESPACE))["items"]
        return pod  # type: ignore[no-any-return]

    # The restart keeps the new limit, and the hog holds at 75% of it.
    def holding() -> bool:
        pod = the_pod()
        statuses = pod["status"].get("containerStatuses") or [{}]
        if "running" not in statuses[0].get("state", {}) or statuses[0].get("restartCount", 0) < 1:
            return False
        log = core.read_namespaced_pod_log(pod["metadata"]["name"], NAMESPACE)
        return "event=holding" in log and f"limit_mib={KILL_TO_MIB}" in log

    until("the restarted hog holding under the new limit", holding, 90)

    # Refused: below what it holds at. The kubelet's own words, and the resize withdrawn.
    code, lines, err = run_resize(cluster, outputs, "--to-mb", str(REFUSED_TO_MIB))
    report(lines)
    assert code == resize.EXIT_AS_PREDICTED, (lines, err)
    assert (lines[-1]["resize"], lines[-1]["predicted"]) == ("refused", "refused")
    message = said(lines, "refused")["message"]
    assert message.startswith("cannot decrease memory limits:"), message
    assert f"memory limit ({REFUSED_TO_MIB * 1024 * 1024})" in message
    assert said(lines, "withdrawn")["cleared"] == "true"
    assert the_pod()["spec"]["containers"][0]["resources"]["limits"]["memory"] == f"{KILL_TO_MIB}Mi"

    # Held: lowered again, above its charge: applied, and no kill while it holds.
    code, lines, err = run_resize(cluster, outputs, "--to-mb", str(HELD_TO_MIB), "--hold", "10s")
    report(lines)
    assert code == resize.EXIT_AS_PREDICTED, (lines, err)
    assert (lines[-1]["resize"], lines[-1]["predicted"]) == ("held", "held")
    status = the_pod()["status"]["containerStatuses"][0]
    assert status["resources"]["limits"]["memory"] in (f"{HELD_TO_MIB}Mi", str(HELD_TO_MIB * 1024 * 1024))
    assert status["restartCount"] == 1
    assert "running" in status["state"]


@pytest.mark.timeout(240)
def test_a_pod_level_limit_lowered_in_place_kills_the_growing_hog_as_predicted(
    cluster: Cluster, pod_scope_killed: Callable[[], Result]
) -> None:
    code, lines, err = pod_scope_killed()
    report(lines)
    assert code == resize.EXIT_AS_PREDICTED, (lines, err)
    verdict = lines[-1]
    assert (verdict["resize"], verdict["scope"], verdict["verdict"]) == ("killed", "pod", "as-predicted")
    assert (verdict["reason"], verdict["exit_code"]) == ("OOMKilled", "137")
    pod = as_json(cluster.api(), client.CoreV1Api(cluster.api()).list_namespaced_pod(POD_SCOPE_NAMESPACE))["items"][0]
    assert pod["status"]["resources"]["limits"]["memory"] == f"{KILL_TO_MIB}Mi"  # the pod's, as its status shows it
    assert "limits" not in pod["spec"]["containers"][0]["resources"]
