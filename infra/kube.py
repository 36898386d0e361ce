"""What the Kubernetes objects share, and what the stack exports about them."""

from __future__ import annotations

from typing import Any, Final

from infra.names import APP, CONTAINER, STOPPED_NODE_SELECTOR, WORKLOAD
from infra.settings import StackSettings
from workload.kinds import memory_kind, process_model
from workload.memory import MIB
from workload.predict import POD_SANDBOX_MAX_BYTES, STARTUP_SECONDS_MAX, KillRange, predict_kill
from workload.settings import DEFAULT_TERMINATION_MESSAGE_PATH

RUN_AS: Final = 65532  # the Dockerfile's USER: numeric, so runAsNonRoot is checked without a passwd file
TERMINATION_MESSAGE_PATH: Final = DEFAULT_TERMINATION_MESSAGE_PATH  # the workload's default, said explicitly
# Where a tmpfs or pagecache hog writes: the emptyDir's mount, passed to it as MEMORY_DIR.
MEMORY_DIR: Final = "/data"
MEMORY_VOLUME: Final = "memory"
# Room on the pagecache emptyDir (and in the container's ephemeral-storage) above what the hog writes: its logs
# count against the same ephemeral-storage limit.
PAGECACHE_ROOM_MIB: Final = 64


def labels(stack: str) -> dict[str, str]:
    """One labels dict for the selector, the pod template and every object."""
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/instance": stack,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def namespace_labels(stack: str) -> dict[str, str]:
    """The namespace's labels: the stack's, and Pod Security "restricted" enforced (warned and audited too).
    infra/rights.yaml gives an admin's namespace (createNamespace=false) the same ones; a test holds them together."""
    return {
        **labels(stack),
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }


def workload_env(settings: StackSettings) -> dict[str, str]:
    """The workload's environment, by the names the workload reads."""
    env = {
        "MEMORY_INCREMENT_MB": str(settings.memory_increment_mb),
        "INCREMENT_INTERVAL_MS": str(settings.increment_interval_ms),
        "TERMINATION_MESSAGE_PATH": TERMINATION_MESSAGE_PATH,
    }
    if settings.memory_ceiling_mb:
        env["MEMORY_CEILING_MB"] = str(settings.memory_ceiling_mb)
    if settings.memory_ceiling_pct:
        env["MEMORY_CEILING_PCT"] = str(settings.memory_ceiling_pct)
    if memory_kind(settings.memory_kind).writes_files:
        env["MEMORY_KIND"] = settings.memory_kind
        env["MEMORY_DIR"] = MEMORY_DIR
    if process_model(settings.process_model).interpreters > 1:
        env["PROCESS_MODEL"] = settings.process_model
    return env


# limitScope=pod: the pod's memory limit, in MiB, as the Downward API gives it to a container without a limit of its
# own (the kubelet fills in the pod's), for the hog where its cgroup does not show the pod's (cgroup v2 namespaces).
POD_LIMIT_VARIABLE: Final = "POD_MEMORY_LIMIT_MB"


def workload_env_from_pod(settings: StackSettings) -> dict[str, dict[str, str]]:
    """The workload's variables the kubelet fills in (the Downward API's resourceFieldRef), by name."""
    if not pod_scoped(settings):
        return {}
    return {POD_LIMIT_VARIABLE: {"resource": "limits.memory", "divisor": "1Mi"}}


def pod_scoped(settings: StackSettings) -> bool:
    """limitScope=pod: the memory and CPU limits are the pod's (spec.resources), not the container's."""
    return settings.limit_scope == "pod"


Resources = dict[str, dict[str, str]]  # requests and limits, as a ResourceRequirements holds them


def _requests_and_limits(settings: StackSettings, storage: dict[str, str]) -> Resources:
    """Memory and CPU (and `storage`, ephemeral-storage) requested and limited: the requests equal to the limits
    (Guaranteed QoS) but for the memory request memoryRequestMb may set below its limit (Burstable)."""
    cpu = f"{settings.cpu_millicores}m"
    return {
        "requests": {"memory": settings.memory_request, **storage, "cpu": cpu},
        "limits": {"memory": settings.memory_limit, **storage, "cpu": cpu},
    }


def container_resources(settings: StackSettings) -> Resources | None:
    """The container's requests and limits: memory and CPU, and for a pagecache hog its ephemeral-storage, each
    request equal to its limit but memory's (memoryRequestMb); with limitScope=pod only the ephemeral-storage, which
    has no pod-level field (None: none)."""
    storage = ephemeral_storage(settings)
    if pod_scoped(settings):
        return {"requests": storage, "limits": storage} if storage else None
    return _requests_and_limits(settings, storage)


def pod_resources(settings: StackSettings) -> Resources | None:
    """The pod's requests and limits (spec.resources, whose QoS class the pod takes) with limitScope=pod, as
    container_resources gives them."""
    if not pod_scoped(settings):
        return None
    return _requests_and_limits(settings, {})


def limit_range_items(settings: StackSettings) -> list[dict[str, Any]]:
    """The LimitRange's items: what no container (limitScope=pod: no pod) in the namespace may outgrow, and what a
    container without a limit gets.

    With limitScope=pod a Container item holding memory would give the hog's container a limit of its own (its
    default), so the memory is capped on the Pod; only a pagecache hog's ephemeral-storage stays on the container.
    With a VPA (vpa), the container's max is VPA's maximum, and its default the limit the stack declares. A container
    without a request gets the hog's (memoryRequestMb: a Burstable pod's, below its default limit), so that one added
    by hand has the hog's QoS class; the hog's own request and limit are explicit, and within the max.
    """
    memory = {"memory": settings.memory_limit}
    storage = ephemeral_storage(settings)
    container = {**storage} if pod_scoped(settings) else {**memory, **storage}
    items: list[dict[str, Any]] = []
    if container:
        # With a VPA the cap is VPA's maximum: what it may give the hog (the LimitRanger refuses a pod above it).
        cap = {**container, "memory": settings.vpa_max} if settings.vpa_max and "memory" in container else container
        request = {**container, "memory": settings.memory_request} if "memory" in container else container
        items.append({"type": "Container", "default": container, "defaultRequest": request, "max": cap})
    if pod_scoped(settings):
        items.append({"type": "Pod", "max": memory})
    return items


def node_selector(settings: StackSettings) -> dict[str, str] | None:
    """The pod's nodeSelector: the configured labels, and for a stopped DaemonSet one no node carries."""
    selector = dict(settings.node_selector)
    if settings.scope == "node" and settings.replicas == 0:
        selector.update(STOPPED_NODE_SELECTOR)
    return selector or None


def memory_empty_dir(settings: StackSettings) -> dict[str, str] | None:
    """The emptyDir (medium, sizeLimit) a tmpfs or pagecache hog writes into; None for anonymous memory.

    tmpfs: medium Memory, sized at the memory limit (its pages count against the limit, so the kernel's kill comes
    first, never ENOSPC). pagecache: on the node's disk, sized for what the hog writes and its logs, so that the
    kubelet never evicts the pod for its disk (the same quantity is the container's ephemeral-storage).
    """
    kind = memory_kind(settings.memory_kind)
    if kind.empty_dir_medium is None:
        return None
    if not kind.on_node_disk:
        return {"medium": kind.empty_dir_medium, "sizeLimit": settings.memory_limit}
    # What it writes before it holds (the workload's own rule), and room for its logs.
    ceiling = settings.memory_ceiling_mb or settings.memory_limit_mb * settings.memory_ceiling_pct // 100
    written = kind.hold_ceiling_mib(ceiling, settings.memory_limit_mb) or settings.memory_limit_mb
    return {"medium": "", "sizeLimit": f"{written + PAGECACHE_ROOM_MIB}Mi"}


def ephemeral_storage(settings: StackSettings) -> dict[str, str]:
    """The container's ephemeral-storage request and limit, as a resources entry (pagecache only: the emptyDir's
    size; empty otherwise)."""
    if not memory_kind(settings.memory_kind).on_node_disk:
        return {}
    empty_dir = memory_empty_dir(settings)
    return {} if empty_dir is None else {"ephemeral-storage": empty_dir["sizeLimit"]}


def predicted_oom_kill(settings: StackSettings) -> KillRange | None:
    """The steps in which the kernel may kill the hog on any node; None where a ceiling holds it (or page cache).

    What the cgroup is charged before the first step depends on the node: up to BASELINE_MAX_MIB an interpreter
    where this container reads the interpreter's files first (page cache the kernel takes back before it kills),
    as little as BASELINE_MIN_MIB that it cannot take back (workload/kinds.py). The earliest step counts the whole of
    the larger charge, the latest only the smaller; supervised, two interpreters are charged before the worker's
    first step. The settings' rules leave a ceiling room for the largest baseline.
    """
    if not memory_kind(settings.memory_kind).killed:
        return None  # page cache is reclaimed at the limit: no kill comes
    if settings.memory_ceiling_pct:
        return None  # it holds below the limit: the rules leave the percent room past the interpreters
    model = process_model(settings.process_model)
    return predict_kill(
        settings.memory_limit_mb * MIB,
        model.baseline_max_mib * MIB,
        settings.memory_increment_mb,
        settings.increment_interval_ms,
        settings.memory_ceiling_mb or None,
        reclaimable_bytes=(model.baseline_max_mib - model.baseline_min_mib) * MIB,
        unseen_bytes=POD_SANDBOX_MAX_BYTES if pod_scoped(settings) else 0,
    )


def predicted_seconds_to_oom_kill(settings: StackSettings) -> dict[str, float] | None:
    """Seconds from the container's start to its first OOM kill, earliest and latest; None where none comes.

    The steps' pauses to the earliest and the latest step, and on the latest the interpreter's start-up before
    its first step (STARTUP_SECONDS_MAX): Kubernetes' startedAt is the container's start, not the first step's.
    """
    kill = predicted_oom_kill(settings)
    if kill is None:
        return None
    return {"earliest": kill.seconds(kill.earliest), "latest": kill.seconds(kill.latest) + STARTUP_SECONDS_MAX}


def predicted_oom_kill_step(settings: StackSettings) -> dict[str, int] | None:
    """The steps, counted from 1, in which the first OOM kill may come: the start line announces its own range
    within this one, from what the node charged it at start."""
    kill = predicted_oom_kill(settings)
    return None if kill is None else {"earliest": kill.earliest, "latest": kill.latest}


def kubectl_commands(namespace: str, stack: str) -> dict[str, str]:
    """The commands to watch it happen, with the namespace and selector filled in."""
    selector = f"app.kubernetes.io/name={APP},app.kubernetes.io/instance={stack}"
    where = f"--namespace {namespace} --selector {selector}"
    last_reason = (
        'jsonpath={range .items[*]}{.metadata.name}{"\\t"}'
        '{.status.containerStatuses[0].lastState.terminated.reason}{"\\t"}'
        '{.status.containerStatuses[0].lastState.terminated.exitCode}{"\\t"}'
        '{.status.containerStatuses[0].restartCount}{"\\n"}{end}'
    )
    return {
        "watchPods": f"kubectl get pods {where} --watch",
        "describePod": f"kubectl describe pods {where}",
        "lastTerminationReason": f"kubectl get pods {where} --output '{last_reason}'",
        "logsOfKilledContainer": f"kubectl logs {where} --previous --tail 5",
    }


def vpa_spec(settings: StackSettings, kind: str) -> dict[str, Any]:
    """The VerticalPodAutoscaler's spec (vpa): over the workload, in the updateMode asked for, on one replica too
    (minReplicas: the updater's default leaves a workload of fewer than two alone), sizing the hog's memory alone (its
    CPU stays as declared) up to vpaMaxMb, requests and limits together (they are equal: Guaranteed stays)."""
    return {
        "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": WORKLOAD},
        "updatePolicy": {"updateMode": settings.vpa, "minReplicas": 1},
        "resourcePolicy": {
            "containerPolicies": [
                {
                    "containerName": CONTAINER,
                    "controlledResources": ["memory"],
                    "controlledValues": "RequestsAndLimits",
                    "maxAllowed": {"memory": settings.vpa_max},
                }
            ]
        },
    }
