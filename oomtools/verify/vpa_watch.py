"""`verify --vpa`: watch VPA answer the hog's OOM kills, through the Kubernetes API alone: the stack's
VerticalPodAutoscaler (its mode, its maximum and its recommendation), the hog's pods (their kills and the limit they
run with), the updater's events on them, and the hog's log (the line that says it holds). Judged by vpa.py."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from oomtools.verdict import PASSED, process_model
from oomtools.verify.arguments import EXIT_AS_PREDICTED, EXIT_NOT_AS_PREDICTED, BadArguments, Unreachable
from oomtools.verify.observe import call, kube_api, read_workload, stack_outputs, until_answers
from oomtools.verify.report import VERDICTS
from oomtools.verify.vpa import (
    NothingToAnswer,
    VpaPrediction,
    VpaSeen,
    judge_vpa,
    predict_vpa,
    seconds_between,
)
from workload import logfmt

VPA_GROUP: Final = "autoscaling.k8s.io"
VPA_VERSION: Final = "v1"
VPA_PLURAL: Final = "verticalpodautoscalers"
VPA_NAME: Final = "oom-killer"  # infra.names.VPA (not imported: it brings nothing but is the program's)
APPLIED_EVENTS: Final = {"InPlaceResizedByVPA": "in-place", "EvictedByVPA": "evicted"}
HOLD_S: Final = 15.0  # how long the hog must go on holding, with no kill, to be judged held
POLL_S: Final = 1.0


def mib(quantity: object) -> int | None:
    if quantity is None:
        return None
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(str(quantity)) // (1024 * 1024))  # type: ignore[no-untyped-call]


@dataclass
class Watch:
    """What the watch has seen so far, in seconds from its start."""

    container: str
    bump_mib: int  # the least limit that is VPA's answer to the kill (prediction.bump_mib)
    kills: dict[str, float] = field(default_factory=dict)  # container ID: when its OOM kill was seen
    targets: list[tuple[float, int]] = field(default_factory=list)  # (when, target MiB) at each change
    applied: tuple[float, str, int] | None = None  # (when, how, limit MiB)
    held_at: float | None = None
    first_pod: str | None = None
    how: str | None = None  # the updater's event seen

    def target(self) -> int | None:
        return self.targets[-1][1] if self.targets else None

    def see_vpa(self, vpa: dict[str, Any], now: float) -> int | None:
        recommendations = (vpa.get("status") or {}).get("recommendation") or {}
        for entry in recommendations.get("containerRecommendations") or []:
            if entry.get("containerName") == self.container:
                target = mib((entry.get("target") or {}).get("memory"))
                if target is not None and target != self.target():
                    self.targets.append((now, target))
                    return target
        return None

    def see_pods(self, pods: list[dict[str, Any]], now: float) -> list[str]:
        """Record each new OOM kill and the limit VPA's answer runs with; the lines to say."""
        said = []
        for pod in pods:
            name = pod["metadata"]["name"]
            self.first_pod = self.first_pod or name
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if status.get("name") != self.container:
                    continue
                for state in (status.get("state"), status.get("lastState")):
                    ended = (state or {}).get("terminated") or {}
                    key = ended.get("containerID")
                    if ended.get("reason") == "OOMKilled" and key and key not in self.kills:
                        self.kills[key] = now
                        limit = mib(((status.get("resources") or {}).get("limits") or {}).get("memory"))
                        said.append(logfmt.line(event="death", pod=name, reason="OOMKilled", limit_mib=limit))
                running = (status.get("state") or {}).get("running") is not None
                limit = mib(((status.get("resources") or {}).get("limits") or {}).get("memory"))
                if self.applied is None and running and self.kills and limit and limit >= self.bump_mib:
                    how = self.how or ("new-pod" if name != self.first_pod else "in-place")
                    self.applied = (now, how, limit)
                    said.append(logfmt.line(event="vpa-applied", pod=name, how=how, limit_mib=limit))
        return said

    def seen(self, started: float) -> VpaSeen:
        first_kill = min(self.kills.values()) if self.kills else None
        before = next((t for when, t in self.targets if first_kill is None or when < first_kill), None)
        # VPA's answer: the first target at or above its bump after the kill (one in between, from its first
        # samples, is not it), else the last seen.
        answers = [(when, t) for when, t in self.targets if first_kill is not None and when >= first_kill]
        bumped = [(when, t) for when, t in answers if t >= self.bump_mib]
        chosen = bumped[0] if bumped else (self.targets[-1] if self.targets else None)
        held = self.held_at
        return VpaSeen(
            kills=len(self.kills),
            first_kill_s=None if first_kill is None else first_kill - started,
            recommendation_before_mib=before,
            recommendation_after_mib=None if chosen is None else chosen[1],
            bumped_s=None if chosen is None else chosen[0] - started,
            applied_how=None if self.applied is None else self.applied[1],
            applied_mib=None if self.applied is None else self.applied[2],
            applied_s=None if self.applied is None else self.applied[0] - started,
            held_s=None if held is None else held - started,
            kills_after_held=0 if held is None else sum(when > held for when in self.kills.values()),
        )


def read_vpa(custom: Any, namespace: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        found = call(custom.get_namespaced_custom_object, VPA_GROUP, VPA_VERSION, namespace, VPA_PLURAL, VPA_NAME)
    except ApiException as error:
        if error.status == 404:
            raise BadArguments(
                f"--vpa: no VerticalPodAutoscaler {namespace}/{VPA_NAME} (pulumi config set vpa InPlaceOrRecreate, "
                "then make up; VPA's CRD must be installed)"
            ) from error
        raise Unreachable(f"reading the VerticalPodAutoscaler: {error.status} {error.reason}") from error
    return dict(found)


def predict_from(vpa: dict[str, Any], container: dict[str, Any], env: dict[str, str]) -> VpaPrediction:
    spec = vpa.get("spec") or {}
    policies = (spec.get("resourcePolicy") or {}).get("containerPolicies") or []
    policy: dict[str, Any] = next((p for p in policies if p.get("containerName") in (container["name"], "*")), {})
    limit = mib(((container.get("resources") or {}).get("limits") or {}).get("memory"))
    if limit is None:
        raise BadArguments("--vpa: the hog's container declares no memory limit (limitScope=pod is not for VPA)")
    try:
        return predict_vpa(
            str((spec.get("updatePolicy") or {}).get("updateMode") or "Recreate"),
            limit,
            int(env.get("MEMORY_CEILING_MB") or 0),
            mib((policy.get("maxAllowed") or {}).get("memory")),
            process_model(env),
        )
    except NothingToAnswer as error:
        raise BadArguments(f"--vpa: {error}") from error


def holds(core: Any, namespace: str, pod: dict[str, Any], container: str) -> bool:
    """Whether the pod's running hog logged that it holds at its ceiling."""
    from kubernetes.client.exceptions import ApiException

    try:
        log = call(core.read_namespaced_pod_log, pod["metadata"]["name"], namespace, container=container)
    except ApiException:
        return False
    return any(logfmt.parse(text).get("event") == "holding" for text in str(log).splitlines())


def run_vpa(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float] = time.monotonic) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    outputs = stack_outputs(args.stack, args.outputs)
    namespace, name = str(outputs["namespace"]), str(outputs["workloadName"])
    kind = str(outputs.get("workloadKind", "Deployment"))
    core, apps = kube_api(args.kubeconfig, args.context)
    from kubernetes import client

    custom = client.CustomObjectsApi(core.api_client)
    workload = until_answers(
        lambda: read_workload(apps, kind, namespace, name), args.timeout, lambda text: print(text, file=err)
    )
    if workload is None:
        raise BadArguments(f"no {kind.lower()} {namespace}/{name} on this kube context: deploy it (make up)")
    template = core.api_client.sanitize_for_serialization(workload.spec.template)
    container = template["spec"]["containers"][0]
    env = {item["name"]: item.get("value", "") for item in container.get("env") or []}
    selector = ",".join(f"{k}={v}" for k, v in sorted(workload.spec.selector.match_labels.items()))
    prediction = predict_from(read_vpa(custom, namespace), container, env)
    say(
        logfmt.line(
            event="vpa-watch",
            namespace=namespace,
            mode=prediction.mode,
            limit_mib=prediction.limit_mib,
            ceiling_mib=prediction.ceiling_mib,
            need_mib=prediction.need_mib,
            bump_mib=prediction.bump_mib,
            max_mib=prediction.max_mib,
            predicted=prediction.outcome,
            why=prediction.why,
        )
    )
    watch = Watch(container["name"], prediction.bump_mib)
    started = clock()
    deadline = started + args.timeout
    while clock() < deadline:
        now = clock()
        target = watch.see_vpa(read_vpa(custom, namespace), now)
        if target is not None:
            say(logfmt.line(event="vpa-recommendation", seconds=round(now - started, 1), target_mib=target))
        if watch.how is None:
            for event in call(core.list_namespaced_event, namespace).items:
                watch.how = APPLIED_EVENTS.get(event.reason) or watch.how
        pods = [
            core.api_client.sanitize_for_serialization(pod)
            for pod in call(core.list_namespaced_pod, namespace, label_selector=selector).items
        ]
        for text in watch.see_pods(pods, now):
            say(text)
        if watch.held_at is None and watch.applied is not None:
            running = [
                pod
                for pod in pods
                if any(
                    (s.get("state") or {}).get("running") is not None
                    for s in (pod.get("status") or {}).get("containerStatuses") or []
                )
            ]
            if any(holds(core, namespace, pod, watch.container) for pod in running):
                watch.held_at = now
                say(logfmt.line(event="held", seconds=round(now - started, 1)))
        if watch.held_at is not None and now - watch.held_at >= HOLD_S:
            break
        time.sleep(POLL_S)
    seen = watch.seen(started)
    tree = judge_vpa(prediction, seen)
    first = seen.first_kill_s
    say(
        logfmt.line(
            vpa=seen_outcome(seen),
            verdict=VERDICTS[tree.status],
            mode=prediction.mode,
            predicted=prediction.outcome,
            limit_mib=prediction.limit_mib,
            bump_mib=prediction.bump_mib,
            recommendation_before_mib=seen.recommendation_before_mib,
            recommendation_after_mib=seen.recommendation_after_mib,
            bumped_after_s=seconds_between(first, seen.bumped_s),
            applied=seen.applied_how,
            applied_after_s=seconds_between(first, seen.applied_s),
            held_after_s=seconds_between(first, seen.held_s),
            kills=seen.kills,
            seconds=round(clock() - started, 1),
            failed="; ".join(f"{c.name} ({c.detail})" for c in tree.failed) or None,
        )
    )
    return EXIT_AS_PREDICTED if tree.status == PASSED else EXIT_NOT_AS_PREDICTED


def seen_outcome(seen: VpaSeen) -> str:
    if seen.held_s is not None and seen.kills_after_held == 0:
        return "held"
    return "looping" if seen.kills else "no-kill"
