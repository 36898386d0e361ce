"""`oom-killer resize` on the real kubelet, run in threads beside other modules (as the watched climb is,
watching.py): each scenario is a minute of waiting on a hog's steps and the kubelet's syncs. test_resize.py judges
what they collected.

Three stacks of a hog that holds at 75% of its limit, made and applied in the caller's thread (Pulumi's mocks need its
event loop; docker-py's client is not shared), each then resized in a thread of its own:

- container scope, lowered while it grows, above what it is charged (killed);
- container scope, once it holds: lowered below its charge (refused, and withdrawn), then above it (held). A pod of
  its own, never restarted: in a restarted pod the kubelet's figure may hold the earlier run's page cache too (a CI
  run: 13.5 MiB), which the prediction then allows for, widening the band it names two outcomes in;
- pod scope (limitScope=pod), lowered while it grows (killed).
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import docker
from kubernetes import client

from oomtools import resize
from oomtools.rehearsal import build_image, declared_pod
from oomtools.render import stack_config
from tests.e2e.cluster import Cluster, as_json
from tests.e2e.support import apply_in_dependency_order, render_for_the_node, until, workload_archive
from workload import logfmt

NAMESPACE = "oom-killer-resize"
HOLDING_NAMESPACE = "oom-killer-resize-holding"
POD_SCOPE_NAMESPACE = "oom-killer-resize-pod"
NAMESPACES = (NAMESPACE, HOLDING_NAMESPACE, POD_SCOPE_NAMESPACE)
# 8 MiB every 2 s up to 75% of the limit: a ceiling to hold at, and steps slow enough to patch between (the kubelet's
# 5 s the prediction allows are 3 steps; the new limit is 8 steps away at the first).
SETTINGS = {"memoryLimitMb": "128", "memoryIncrementMb": "8", "incrementIntervalMs": "2000", "memoryCeilingPct": "75"}
KILL_TO_MIB = 88  # under the 96 MiB it would hold at: its steps reach it
# The hogs resized to be killed grow without a ceiling, so that the kill is what the product announces whatever the
# node charged them at start. Holding at 75% of 128, a hog whose start was charged the interpreter's files (page cache,
# reclaimable: its pod the first of the image on the node) holds at 88 with that cache taken back: a CI run's pod-scope
# hog was charged 32 MiB at the patch, not 21, `resize` rightly predicted held, and it held.
GROWING = {"memoryCeilingPct": "0"}
# Once it holds at 96 MiB (75% of 128):
REFUSED_TO_MIB = 64
HELD_TO_MIB = 110
HOLDING_TIMEOUT_S = 90.0
JOIN_TIMEOUT_S = 600.0

Result = tuple[int, list[dict[str, str]], str]  # the exit code, the lines as fields, stderr


def run_resize(cluster: Cluster, outputs: dict[str, Any], *args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    argv = ["--outputs", json.dumps(outputs), "--kubeconfig", str(cluster.kubeconfig), "--timeout", "3m", *args]
    code = resize.main(argv, out=out, err=err)
    return code, [logfmt.parse(text) for text in out.getvalue().splitlines()], err.getvalue()


@dataclass
class Collected:
    """What a scenario's thread collected: each resize's result by name, the pod as it stood after each, and what
    it raised."""

    results: dict[str, Result] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: BaseException | None = None


class Resizes:
    """The two scenarios: `start()` (again: a no-op), `wait()` for what they collected (raising what a thread
    raised), `close()` to delete their namespaces."""

    def __init__(self, cluster: Cluster, engine: docker.DockerClient) -> None:
        self.cluster, self.engine = cluster, engine
        self.threads: list[threading.Thread] = []
        self.container = Collected()
        self.holding = Collected()
        self.pod_scope = Collected()

    def _deploy(self, namespace: str, **settings: str) -> dict[str, Any]:
        config = {**stack_config("dev"), **SETTINGS, **settings, "namespace": namespace}
        rendered = render_for_the_node(config, namespace)
        self.cluster.load_image(workload_archive(self.engine, build_image(self.engine, declared_pod(rendered))))
        apply_in_dependency_order(self.cluster.api(), rendered)
        return {key: rendered.exports.get(key) for key in ("namespace", "workloadKind", "workloadName")}

    def start(self) -> None:
        if self.threads:
            return
        # Each scenario's thread starts as soon as its own stack is applied: a growing hog is resized while it grows,
        # not once the next stacks' images are built and loaded (under load that took long enough, in a run, for the
        # first hog to reach its ceiling first).
        scenarios: tuple[tuple[Any, dict[str, str], str, Collected], ...] = (
            (self._pod_scope, {**GROWING, "limitScope": "pod"}, POD_SCOPE_NAMESPACE, self.pod_scope),
            (self._killed, GROWING, NAMESPACE, self.container),
            (self._holding, {}, HOLDING_NAMESPACE, self.holding),
        )
        for scenario, settings, namespace, collected in scenarios:
            outputs = self._deploy(namespace, **settings)
            thread = threading.Thread(target=self._run, args=(scenario, outputs, collected), daemon=True)
            thread.start()
            self.threads.append(thread)

    def wait(self) -> tuple[Collected, Collected, Collected]:
        self.start()
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT_S)
            assert not thread.is_alive(), f"a resize scenario was not over in {JOIN_TIMEOUT_S:.0f} s"
        return self.container, self.holding, self.pod_scope

    def close(self) -> None:
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT_S)
        core = client.CoreV1Api(self.cluster.api())
        for namespace in NAMESPACES:
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(namespace)

    def _run(self, scenario: Any, outputs: dict[str, Any], collected: Collected) -> None:
        try:
            scenario(outputs, collected)
        except BaseException as error:  # whatever it is, the test raises it
            collected.error = error

    def _pods(self, namespace: str) -> list[dict[str, Any]]:
        api = self.cluster.api()
        return list(as_json(api, client.CoreV1Api(api).list_namespaced_pod(namespace))["items"])

    def _the_pod(self, namespace: str) -> dict[str, Any]:
        (pod,) = self._pods(namespace)
        return pod

    def _pod_scope(self, outputs: dict[str, Any], collected: Collected) -> None:
        collected.results["killed"] = run_resize(self.cluster, outputs, "--to-mb", str(KILL_TO_MIB))
        collected.pods["killed"] = self._the_pod(POD_SCOPE_NAMESPACE)

    def _killed(self, outputs: dict[str, Any], collected: Collected) -> None:
        # Patched right after a step, at 88 MiB, which its steps reach.
        collected.results["killed"] = run_resize(self.cluster, outputs, "--to-mb", str(KILL_TO_MIB))
        core = client.CoreV1Api(self.cluster.api())
        starts: list[dict[str, str]] = []

        def restarted() -> bool:  # the next run's start line: the limit it found
            pod = self._the_pod(NAMESPACE)
            statuses = pod["status"].get("containerStatuses") or [{}]
            if "running" not in statuses[0].get("state", {}) or statuses[0].get("restartCount", 0) < 1:
                return False
            log = core.read_namespaced_pod_log(pod["metadata"]["name"], NAMESPACE)
            starts[:] = [f for f in map(logfmt.parse, log.splitlines()) if f.get("event") == "start"]
            return bool(starts)

        until("the killed hog running again", restarted, HOLDING_TIMEOUT_S)
        collected.pods["restarted_start"] = starts[-1]

    def _holding(self, outputs: dict[str, Any], collected: Collected) -> None:
        core = client.CoreV1Api(self.cluster.api())

        def holding() -> bool:
            pods = self._pods(HOLDING_NAMESPACE)  # none yet, right after the Deployment is applied
            if len(pods) != 1:
                return False
            pod = pods[0]
            statuses = pod["status"].get("containerStatuses") or [{}]
            if "running" not in statuses[0].get("state", {}):
                return False
            return "event=holding" in core.read_namespaced_pod_log(pod["metadata"]["name"], HOLDING_NAMESPACE)

        until("the hog holding at 75% of its limit", holding, HOLDING_TIMEOUT_S)
        # Refused: below what it holds at; withdrawn.
        collected.results["refused"] = run_resize(self.cluster, outputs, "--to-mb", str(REFUSED_TO_MIB))
        collected.pods["refused"] = self._the_pod(HOLDING_NAMESPACE)
        # Held: lowered again, above its charge: applied, and no kill while it holds.
        collected.results["held"] = run_resize(self.cluster, outputs, "--to-mb", str(HELD_TO_MIB), "--hold", "10s")
        collected.pods["held"] = self._the_pod(HOLDING_NAMESPACE)
