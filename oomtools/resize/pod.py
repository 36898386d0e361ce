"""What resize reads of the hog's pod and log, and the patch it sends: pure functions of the pod as the API gives it
(a dict, as `kubectl get -o json` prints it) and of the log's lines, no cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from kubernetes.utils import parse_quantity

from oomtools.resize.predict import HogState
from oomtools.verdict import kill_step
from workload import logfmt
from workload.memory import MIB

CONDITION_IN_PROGRESS: Final = "PodResizeInProgress"
# The kubelet's Error messages that refuse a decrease for the usage: its own check (`... below current usage (U)`),
# and where the write itself failed, runc's on cgroup v1 (`unable to set memory limit to N (current usage: U, ...`).
# Any other error (`missing container "c" memory usage`: no stats for it yet) is one the kubelet retries at its next
# sync, not an answer.
USAGE_REFUSALS: Final = ("below current usage", "unable to set memory limit")
CONDITION_PENDING: Final = "PodResizePending"
REASON_ERROR: Final = "Error"


def mib(quantity: object) -> int | None:
    """A memory quantity ("128Mi", "134217728") in MiB, rounded down; None where there is none."""
    if quantity is None:
        return None
    return int(parse_quantity(str(quantity)) // MIB)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Target:
    """The hog's container in its pod, and where its memory limit is declared: the container's resources, or the
    pod's (limitScope=pod: `spec.resources`, resized in place from 1.36, InPlacePodLevelResourcesVerticalScaling)."""

    pod: str
    container: str
    index: int
    scope: str  # "container" or "pod"
    limit_mib: int
    request_mib: int | None

    @property
    def resources_path(self) -> str:
        return "/spec/resources" if self.scope == "pod" else f"/spec/containers/{self.index}/resources"

    @property
    def burstable(self) -> bool:
        """Whether its memory request is below its limit (memoryRequestMb): the pod's QoS class is Burstable, and a
        resize keeps the request (the API server refuses a resize that changes the class)."""
        return self.request_mib is not None and self.request_mib < self.limit_mib


def refusal(target: Target, to_mib: int) -> str | None:
    """Why a resize to `to_mib` MiB is not one to send, or None: a Burstable pod's new limit at or below its request
    would make it Guaranteed (at the request; CPU's request is its limit) or leave a request above the limit (below
    it), and the API server refuses both."""
    if not target.burstable or target.request_mib is None or to_mib > target.request_mib:
        return None
    return (
        f"--to-mb {to_mib}: pod {target.pod} is Burstable (memory request {target.request_mib} MiB, limit "
        f"{target.limit_mib} MiB) and resize keeps its request: a limit at or below the request would change its QoS "
        f"class, which the API server refuses; give more than {target.request_mib}"
    )


def target_of(pod: dict[str, Any]) -> Target | None:
    """The pod's hog container (its first) and its memory limit; None where none is declared (nothing to resize)."""
    spec = pod["spec"]
    container = spec["containers"][0]
    pod_resources = spec.get("resources") or {}
    if (pod_resources.get("limits") or {}).get("memory") is not None:
        scope, resources = "pod", pod_resources
    else:
        scope, resources = "container", container.get("resources") or {}
    limit = mib((resources.get("limits") or {}).get("memory"))
    if limit is None:
        return None
    request = mib((resources.get("requests") or {}).get("memory"))
    return Target(pod["metadata"]["name"], container["name"], 0, scope, limit, request)


def resize_patch(target: Target, to_mib: int, request_mib: int | None = None) -> list[dict[str, str]]:
    """The JSON patch for the pod's `resize` subresource, as VPA's updater sends it: the memory limit to `to_mib`,
    and the request with it where it equalled the limit (Guaranteed stays Guaranteed: the API refuses a change of
    QoS class). A Burstable pod's request is kept: a limit at or below it is refused before any patch (refusal).
    `request_mib` sets the request itself (to undo a resize)."""
    ops = [{"op": "replace", "path": f"{target.resources_path}/limits/memory", "value": f"{to_mib}Mi"}]
    if request_mib is None and target.request_mib == target.limit_mib:
        request_mib = to_mib
    if request_mib is not None:
        ops.append({"op": "replace", "path": f"{target.resources_path}/requests/memory", "value": f"{request_mib}Mi"})
    return ops


def hog_state(limit_mib: int, log: str, restarted: bool = False) -> HogState | None:
    """The hog as the last run in its log tells it (its last start line and what follows); None until it has logged
    a step or holds (a resize before its first step has nothing to predict from). `restarted`: its container has run
    before in this pod."""
    runs: list[list[dict[str, str]]] = []
    for text in log.splitlines():
        fields = logfmt.parse(text)
        if fields.get("event") == "start":
            runs.append([fields])
        elif runs:
            runs[-1].append(fields)
    if not runs:
        return None
    start, *rest = runs[-1]
    last = next((f for f in reversed(rest) if f.get("event") in ("step", "holding")), None)
    if last is None:
        return None
    steps = [f for f in rest if f.get("event") == "step"]
    ceiling = start.get("ceiling_mib", "none")
    try:
        return HogState(
            limit_mib=limit_mib,
            usage_mib=int(last["cgroup_usage_mib"]),
            step=int(steps[-1]["step"]) if steps else 0,
            holding=last["event"] == "holding",
            increment_mib=int(start["increment_mib"]),
            interval_ms=int(start["interval_ms"]),
            ceiling_mib=None if ceiling == "none" else int(ceiling),
            charged_mib=int(start["cgroup_usage_mib"]),
            reclaimable_mib=int(start.get("reclaimable_mib", "0")),
            restarted=restarted,
            swap_mib=int(start.get("swap_max_mib", "0")),
        )
    except (KeyError, ValueError):
        return None  # a line without the kernel's figures (no cgroup seen): nothing to predict from


def lines_in(log: str) -> int:
    return len(log.splitlines())


@dataclass(frozen=True)
class Reading:
    """One look at the pod after the patch: the kubelet's refusal or pending reason (condition and message), the
    limit its status shows for the hog, and the hog's kill where the container that was patched has died."""

    refused: str | None = None  # PodResizeInProgress/Error's message, refusing it for the usage
    error: str | None = None  # PodResizeInProgress/Error's message for anything else: the kubelet tries again
    pending: str | None = None  # PodResizePending: reason and message
    in_progress: bool = False  # PodResizeInProgress without an error: allocated, not yet applied
    applied_mib: int | None = None
    killed: dict[str, Any] | None = None  # the terminated state of the patched container


def read_pod(pod: dict[str, Any], target: Target, container_id: str) -> Reading:
    """What the pod shows of the resize and of the container `container_id` (the one running when it was sent)."""
    status = pod.get("status") or {}
    refused = error = pending = None
    in_progress = False
    for condition in status.get("conditions") or []:
        if condition.get("type") == CONDITION_IN_PROGRESS and condition.get("status") == "True":
            message = condition.get("message") or ""
            if condition.get("reason") != REASON_ERROR:
                in_progress = True
            elif any(words in message for words in USAGE_REFUSALS):
                refused = message
            else:
                error = message
        elif condition.get("type") == CONDITION_PENDING and condition.get("status") == "True":
            pending = f"{condition.get('reason')}: {condition.get('message') or ''}"
    statuses: list[dict[str, Any]] = status.get("containerStatuses") or []
    container: dict[str, Any] = next((c for c in statuses if c.get("name") == target.container), {})
    resources = (status.get("resources") if target.scope == "pod" else container.get("resources")) or {}
    applied = mib((resources.get("limits") or {}).get("memory"))
    killed = None
    for state in (container.get("state"), container.get("lastState")):
        terminated = (state or {}).get("terminated")
        if terminated and terminated.get("containerID") == container_id:
            killed = terminated
    return Reading(refused, error, pending, in_progress, applied, killed)


def killed_step(terminated: dict[str, Any]) -> int | None:
    """The step a kill came in, from the hog's last line the kubelet kept as the termination message."""
    message = terminated.get("message") or ""
    return kill_step(message) if "step=" in message else None


def has_restarted(pod: dict[str, Any], container: str) -> bool:
    """Whether the container has run before in this pod (its restart count)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return int(status.get("restartCount") or 0) > 0
    return False


def running_container_id(pod: dict[str, Any], container: str) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container and (status.get("state") or {}).get("running") is not None:
            return str(status.get("containerID") or "") or None
    return None
