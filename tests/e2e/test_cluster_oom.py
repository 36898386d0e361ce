"""The stack's objects admitted by a real API server, and its pod OOM-killed by a real kubelet.

The objects are the ones `pulumi up` would send (rendered under mocks from the dev stack's config), applied with
a Kubernetes client in the order the program's dependencies give. The image is built as the stack builds it and
loaded into the node's containerd, as a kind user loads it.
"""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.cluster import Cluster, as_json
from tests.e2e.harness.nodes import PAUSE_IMAGE
from tests.e2e.support import Deployed, fact
from tests.prediction import assert_killed_in_announced_range
from workload import logfmt

pytestmark = pytest.mark.e2e

KUBERNETES_MODULE = Path(__file__).resolve().parent / "builds" / "kubernetes" / "go.mod"
OOM_TIMEOUT = 300.0  # the dev stack is killed ~7 s after each start; three restarts take 1-2 minutes with back-off
# The kubelet's CrashLoopBackOff: the first restart at once, then 10 s before the next, doubling, at most 5 minutes.
FIRST_BACK_OFF, MAX_BACK_OFF = 10, 300
BACK_OFF_RESTARTS = 3  # watched until restart 3: at once, ~10 s, ~20 s (the doubling)
# A pod in back-off is tried again every 10-15 s (the pod worker's requeue with jitter), so a restart can come up to
# ~16 s after its back-off ends; a loaded 2-core node adds seconds more.
LATE_BY_AT_MOST = 25


def built_release() -> str:
    """The k8s.io/kubernetes version the node was built from, as its wrapper module pins it."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", KUBERNETES_MODULE.read_text(), re.MULTILINE)
    assert match, f"no k8s.io/kubernetes requirement in {KUBERNETES_MODULE}"
    return match.group(1)


def _restricted_pod(
    name: str, resources: client.V1ResourceRequirements | None = None, *, privileged: bool | None = None
) -> client.V1Pod:
    """A pod that Pod Security `restricted` admits, unless made privileged."""
    security = client.V1SecurityContext(
        allow_privilege_escalation=None if privileged else False,  # the API refuses privileged without escalation
        capabilities=client.V1Capabilities(drop=["ALL"]),
        run_as_non_root=True,
        run_as_user=65535,
        seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        privileged=privileged,
    )
    container = client.V1Container(
        name="probe",
        image=PAUSE_IMAGE,
        image_pull_policy="IfNotPresent",
        security_context=security,
        resources=resources,
    )
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[container]))


def test_the_node_runs_the_release_it_was_built_from(cluster: Cluster) -> None:
    server = client.VersionApi(cluster.api()).get_code().git_version
    kubelet = cluster.node()["status"]["nodeInfo"]["kubeletVersion"]
    assert server == built_release()
    assert kubelet == built_release()
    fact("kubernetes", f"{server} kubelet={kubelet}")


def test_the_api_server_admits_the_stack_in_dependency_order(deployed: Deployed) -> None:
    order = deployed.applied_order
    assert sorted(order) == ["Deployment", "LimitRange", "Namespace", "NetworkPolicy"]
    # The namespace holds the rest, and a LimitRange acts only on pods admitted after it exists.
    assert order[0] == "Namespace"
    assert order.index("LimitRange") < order.index("Deployment")
    namespace = as_json(deployed.api, deployed.core.read_namespace(deployed.namespace))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    fact("applied", ",".join(deployed.applied_order))


def test_pod_security_restricted_rejects_a_privileged_pod(deployed: Deployed) -> None:
    with pytest.raises(ApiException) as refused:
        deployed.core.create_namespaced_pod(
            deployed.namespace, _restricted_pod("privileged", privileged=True), dry_run="All"
        )
    assert refused.value.status == 403
    assert "violates PodSecurity" in str(refused.value.body)
    fact("psa_privileged_rejected", "true")


def test_the_limit_range_gives_a_container_without_limits_the_default(deployed: Deployed) -> None:
    admitted = deployed.core.create_namespaced_pod(deployed.namespace, _restricted_pod("no-limits"), dry_run="All")
    limits = as_json(deployed.api, admitted)["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == f"{deployed.limit_mib}Mi"
    fact("limitrange_default_applied", f"true memory={limits['memory']}")


def test_the_limit_range_rejects_a_container_above_its_max(deployed: Deployed) -> None:
    above = client.V1ResourceRequirements(limits={"memory": f"{deployed.limit_mib * 2}Mi"}, requests={"memory": "16Mi"})
    with pytest.raises(ApiException) as refused:
        deployed.core.create_namespaced_pod(deployed.namespace, _restricted_pod("too-big", above), dry_run="All")
    assert refused.value.status == 403
    assert "maximum memory usage per Container" in str(refused.value.body)
    fact("limitrange_max_rejected", "true")


def _seconds(start: str, end: str) -> float:
    """Seconds between two of the API's RFC 3339 times."""
    return (datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds()


def expected_back_off(restart: int) -> int:
    """The kubelet's wait before restart n, from the death before it: none before the first, then 10 s, doubling,
    at most 300 s."""
    return 0 if restart <= 1 else min(FIRST_BACK_OFF * 2 ** (restart - 2), MAX_BACK_OFF)


def assert_back_off_shape(back_offs: dict[int, float]) -> None:
    """Each gap seen (restart count -> seconds from the death before it to the new start) as the kubelet's back-off
    says. The API's times are whole seconds (each truncated), so a gap reads up to a second short."""
    for restart in range(1, BACK_OFF_RESTARTS + 1):
        assert restart in back_offs, f"restart {restart} was never seen running; gaps seen {back_offs}"
    for restart, gap in sorted(back_offs.items()):
        wait = expected_back_off(restart)
        if wait == 0:
            # At once: sooner than anything a 10 s back-off could read as (9 s or more).
            assert gap <= FIRST_BACK_OFF - 2, f"restart {restart} came {gap:.0f} s after the death, not at once"
        else:
            assert wait - 1 <= gap <= wait + LATE_BY_AT_MOST, (
                f"restart {restart} came {gap:.0f} s after the death; the back-off is {wait} s; gaps {back_offs}"
            )


def test_the_kubelet_reports_the_oom_kill_and_backs_off(deployed: Deployed) -> None:
    core = deployed.core
    restarts_seen: list[int] = []
    crashloop = False
    back_offs: dict[int, float] = {}  # restart count -> seconds from the death before it to the new start
    deadline = time.monotonic() + OOM_TIMEOUT
    pod: dict[str, Any] = {}
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pods = as_json(deployed.api, core.list_namespaced_pod(deployed.namespace, label_selector=deployed.selector))
        for pod in pods["items"]:
            for status in pod.get("status", {}).get("containerStatuses", []):
                if not restarts_seen or status["restartCount"] != restarts_seen[-1]:
                    restarts_seen.append(status["restartCount"])
                reason = status.get("state", {}).get("waiting", {}).get("reason")
                crashloop = crashloop or reason == "CrashLoopBackOff"
                running = status.get("state", {}).get("running", {}).get("startedAt")
                died = status.get("lastState", {}).get("terminated", {}).get("finishedAt")
                if running and died:
                    back_offs[status["restartCount"]] = _seconds(died, running)
        if crashloop and BACK_OFF_RESTARTS in back_offs:
            break
        time.sleep(0.5)
    assert status, "no pod of the Deployment ever reported a container"
    terminated = status.get("lastState", {}).get("terminated")
    assert terminated, f"no container death within {OOM_TIMEOUT:.0f} s; restarts seen {restarts_seen}"
    previous_log = core.read_namespaced_pod_log(pod["metadata"]["name"], deployed.namespace, previous=True)
    steps = [line for line in previous_log.splitlines() if logfmt.parse(line).get("event") == "step"]
    message = str(terminated.get("message", "")).strip()

    assert terminated["reason"] == "OOMKilled"
    assert terminated["exitCode"] == 137
    assert steps, f"the killed container logged no step:\n{previous_log}"
    assert message == steps[-1], "the termination message is not the last step's line"
    # Killed in a step the hog announced from what the node charged it at start, and in the stack's own range.
    start = next(logfmt.parse(line) for line in previous_log.splitlines() if line.startswith("event=start "))
    killed_in = assert_killed_in_announced_range(start, len(steps))
    announced = deployed.rendered.exports["predictedOomKillStep"]
    assert announced["earliest"] <= killed_in <= announced["latest"], (announced, start)
    fact(
        "kill_step",
        f"{killed_in} announced={start['predicted_steps_earliest']}..{start['predicted_steps_latest']} "
        f"reclaimable_mib={start['reclaimable_mib']} stack={announced['earliest']}..{announced['latest']}",
    )
    assert status["restartCount"] >= 2
    assert restarts_seen == sorted(restarts_seen), f"restart count went down: {restarts_seen}"
    assert crashloop, "never saw CrashLoopBackOff between restarts"
    fact("back_off_seconds", " ".join(f"restart{count}={gap:.0f}" for count, gap in sorted(back_offs.items())))
    assert_back_off_shape(back_offs)
    # Requests equal to limits for memory and CPU: the kubelet ranks the pod Guaranteed, the last to be evicted.
    assert pod["status"]["qosClass"] == "Guaranteed"

    predicted = deployed.rendered.exports["predictedSecondsToOomKill"]
    lived = _seconds(terminated["startedAt"], terminated["finishedAt"])
    # The prediction counts the interpreter's start-up; the API's times are whole seconds (a second each way), and
    # the steps' own allocations under the 100-millicore limit are not counted: a second more at the late end.
    assert predicted["earliest"] - 1 <= lived <= predicted["latest"] + 2, (lived, predicted)
    fact(
        "pod_reason",
        f"{terminated['reason']} exit_code={terminated['exitCode']} restarts={status['restartCount']} "
        f"qos={pod['status']['qosClass']} "
        f"message={message}",
    )
    fact("crashloop", str(crashloop).lower())
    fact("kill_seconds", f"{lived:.0f} predicted={predicted['earliest']}-{predicted['latest']}")
