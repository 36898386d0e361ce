"""The declared pod, run on a Docker engine the way a kubelet would run it.

`make demo` and the end-to-end test share this: render the program (under mocks) for a stack's config, build
the image exactly as the declared docker Image says, translate the workload's container (the Deployment's, or with
scope=node the DaemonSet's: one pod either way) into a container on the engine (memory limit without swap, CPU,
env, user, read-only root, dropped capabilities, no new privileges, no network, the termination message file
mounted), then follow its log to the end and read what the engine says of its death.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from infra.names import STOPPED_NODE_SELECTOR
from oomtools.render import PROJECT_DIR, Rendered, render, stack_config

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
WORKLOADS = (DEPLOYMENT, DAEMON_SET)  # a stack declares one of the two (scope)
IMAGE = "docker:index/image:Image"

_BINARY_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
_DECIMAL_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes: a whole number with an optional binary or decimal suffix."""
    for suffixes in (_BINARY_SUFFIXES, _DECIMAL_SUFFIXES):
        for suffix, factor in suffixes.items():
            if quantity.endswith(suffix) and quantity[: -len(suffix)].isdigit():
                return int(quantity[: -len(suffix)]) * factor
    if quantity.isdigit():
        return int(quantity)
    raise ValueError(f"not a memory quantity this translation knows: {quantity!r}")


def nano_cpus(quantity: str) -> int:
    """A Kubernetes CPU quantity ("250m", "2") in the engine's billionths of a CPU."""
    if quantity.endswith("m") and quantity[:-1].isdigit():
        return int(quantity[:-1]) * 10**6
    return int(float(quantity) * 10**9)


@dataclass(frozen=True)
class DeclaredPod:
    build: dict[str, Any] | None  # the docker Image resource's inputs, None for a prebuilt image
    spec: dict[str, Any]  # the workload's pod template spec
    container: dict[str, Any]
    replicas: int = 1  # a DaemonSet's: 1, or 0 where its nodeSelector stops it
    # The stack's predictedSecondsToOomKill export ({"earliest": s, "latest": s} from the container's start), None
    # where no kill is predicted.
    predicted_seconds: dict[str, float] | None = None


class ImageUnavailable(Exception):
    """The image to run, or the base image its build starts from, is neither on the engine nor to be had."""


def declared_pod(rendered: Rendered) -> DeclaredPod:
    """The pod of the stack's one workload, a Deployment or a DaemonSet."""
    (workload,) = [resource for resource in rendered.resources if resource.type in WORKLOADS]
    spec = workload.inputs["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    images = rendered.of_type(IMAGE)
    predicted = rendered.exports.get("predictedSecondsToOomKill") or None
    if workload.type == DAEMON_SET:
        stopped = STOPPED_NODE_SELECTOR.items() <= pod.get("nodeSelector", {}).items()
        replicas = 0 if stopped else 1
    else:
        replicas = int(spec.get("replicas", 1))
    return DeclaredPod(images[0].inputs if images else None, pod, container, replicas, predicted)


def stack_pod(stack: str = "dev", overrides: dict[str, str] | None = None) -> DeclaredPod:
    """The pod a stack declares; BASE_IMAGE from the environment becomes its baseImage (as in CI)."""
    config = {**stack_config(stack), **(overrides or {})}
    if os.environ.get("BASE_IMAGE") and "baseImage" not in (overrides or {}):
        config["baseImage"] = os.environ["BASE_IMAGE"]
    return declared_pod(render(config, stack_name=stack))


def run_options(pod: DeclaredPod, termination_file: Path) -> dict[str, Any]:
    """The workload's container as keyword arguments of docker's containers.run(), as a kubelet would run it."""
    container, spec = pod.container, pod.spec
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    limits = container.get("resources", {}).get("limits", {})
    options: dict[str, Any] = {
        "image": container["image"],
        "environment": {item["name"]: item["value"] for item in container.get("env", [])},
        "network_mode": "none",  # the namespace's NetworkPolicy denies everything
        "read_only": bool(security.get("readOnlyRootFilesystem")),
        "cap_drop": security.get("capabilities", {}).get("drop", []),
        "cap_add": security.get("capabilities", {}).get("add", []),
        "security_opt": [] if security.get("allowPrivilegeEscalation", True) else ["no-new-privileges"],
        "stop_signal": "SIGTERM",
        "volumes": {str(termination_file): {"bind": container["terminationMessagePath"], "mode": "rw"}},
        "labels": {"io.kubernetes.container.name": container["name"], "oom-killer.rehearsal": "true"},
    }
    if "runAsUser" in security:
        group = security.get("runAsGroup", security["runAsUser"])
        options["user"] = f"{security['runAsUser']}:{group}"
    if "memory" in limits:
        # The kubelet gives a container no swap: the memory limit is the memory+swap limit too.
        options["mem_limit"] = options["memswap_limit"] = memory_bytes(limits["memory"])
    if "cpu" in limits:
        options["nano_cpus"] = nano_cpus(limits["cpu"])
    # emptyDir volumes, as a kubelet makes them: medium Memory is a tmpfs (its pages charged to the container's
    # memory, as on a node), one on disk a fresh directory of the node's that every user may write to.
    mounts = {mount["name"]: mount["mountPath"] for mount in container.get("volumeMounts", [])}
    for volume in spec.get("volumes", []):
        empty_dir, path = volume.get("emptyDir"), mounts.get(volume["name"])
        if empty_dir is None or path is None:
            continue
        if empty_dir.get("medium") == "Memory":
            size = memory_bytes(empty_dir["sizeLimit"]) if "sizeLimit" in empty_dir else None
            options.setdefault("tmpfs", {})[path] = "mode=1777" + (f",size={size}" if size else "")
        else:
            directory = termination_file.parent / "volumes" / volume["name"]
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o777)  # an emptyDir is world-writable: the pod's user writes to it
            options["volumes"][str(directory)] = {"bind": path, "mode": "rw"}
    return options


def one_line(error: BaseException) -> str:
    """An error as one line: the engine's explanation where it gives one, white space collapsed."""
    return " ".join(str(getattr(error, "explanation", None) or error).split())


def ensure_image(client: docker.DockerClient, reference: str, pull_policy: str = "IfNotPresent") -> None:
    """Have the image on the engine as a kubelet would, by the pull policy: a local image is not pulled again."""
    if pull_policy != "Always":
        try:
            client.images.get(reference)
            return
        except docker.errors.ImageNotFound:
            if pull_policy == "Never":
                raise ImageUnavailable(f"{reference} is not on the Docker engine (imagePullPolicy Never)") from None
    try:
        client.images.pull(reference)
    except docker.errors.DockerException as error:
        raise ImageUnavailable(
            f"{reference} is not on the Docker engine and cannot be pulled: {one_line(error)}"
        ) from error


def dockerfile_base_image(dockerfile: Path = PROJECT_DIR / "Dockerfile") -> str:
    """The Dockerfile's default BASE_IMAGE, the one a build without the build argument starts from."""
    found = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    if found is None:
        raise ValueError(f"{dockerfile} declares no default BASE_IMAGE")
    return found.group(1)


def build_image(client: docker.DockerClient, pod: DeclaredPod) -> str:
    """Build the image as the declared docker Image says (context, Dockerfile, build args, tag); return its tag.

    The declared platform is left to the engine: a rehearsal runs on this machine's own architecture. A prebuilt
    image is fetched by the container's pull policy instead. Raises ImageUnavailable, in one line, when the image
    or the build's base image cannot be had, or the build fails.
    """
    if pod.build is None:
        ensure_image(client, str(pod.container["image"]), str(pod.container.get("imagePullPolicy", "IfNotPresent")))
        return str(pod.container["image"])
    build = pod.build["build"]
    tag = str(pod.build["imageName"])
    args = build.get("args") or {}
    base = args.get("BASE_IMAGE") or dockerfile_base_image(Path(build["dockerfile"]))
    try:
        ensure_image(client, base)
    except ImageUnavailable as error:
        raise ImageUnavailable(
            f"the base image {error}; set BASE_IMAGE to an image with python3 3.11+ that the engine has or can "
            "pull (a mirror, or one built as .ci/run does), "
            "e.g. BASE_IMAGE=mirror.example.com/library/python:3.12-slim make demo"
        ) from error
    try:
        client.images.build(
            path=build["context"],
            dockerfile=build["dockerfile"],
            buildargs=args,
            tag=tag,
            rm=True,
            pull=False,
            network_mode=build.get("network"),
        )
    except docker.errors.BuildError as error:
        raise ImageUnavailable(f"building {tag} failed: {one_line(error)}") from error
    return tag


@dataclass
class Outcome:
    oom_killed: bool
    exit_code: int
    seconds: float  # the rehearsal's own clock: from the container's start to the engine's word of its end
    lines: list[str]
    termination_message: str
    # The engine's clock, in POSIX seconds: when it logged each of `lines`, and the container's start and end (its
    # State.StartedAt and FinishedAt, as Kubernetes' startedAt and finishedAt); None where the engine gave none.
    line_times: list[float | None] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None


def engine_time(stamp: str) -> float | None:
    """An engine's RFC 3339 time (nanoseconds, `Z`) in POSIX seconds; None for its zero time or no time at all."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return None if when.year == 1 else when.timestamp()


def start(client: docker.DockerClient, pod: DeclaredPod, workdir: Path) -> tuple[Container, Path]:
    """Start the declared container; the termination message file is made here, writable by the pod's user."""
    termination_file = workdir / "termination-log"
    termination_file.touch()
    termination_file.chmod(0o666)
    return client.containers.run(detach=True, **run_options(pod, termination_file)), termination_file


def follow(container: Container, termination_file: Path, on_line: Callable[[str], None] | None = None) -> Outcome:
    """Follow the container's log until it ends; then what the engine says of how it ended."""
    started = time.monotonic()
    lines: list[str] = []
    line_times: list[float | None] = []
    # Each line with the engine's time of it ("<RFC 3339> <line>"): when a step came, on the clock the container's
    # start and end are given in.
    for raw in container.logs(stream=True, follow=True, stdout=True, stderr=True, timestamps=True):
        for stamped in raw.decode(errors="replace").splitlines():
            stamp, _, rest = stamped.partition(" ")
            at = engine_time(stamp)
            line = stamped if at is None else rest  # no time: the rest of a line the stream cut in two
            lines.append(line)
            line_times.append(at)
            if on_line is not None:
                on_line(line)
    result = container.wait(timeout=60)
    seconds = time.monotonic() - started
    container.reload()
    state = container.attrs["State"]
    return Outcome(
        oom_killed=bool(state["OOMKilled"]),
        exit_code=int(result["StatusCode"]),
        seconds=seconds,
        lines=lines,
        termination_message=termination_file.read_text(),
        line_times=line_times,
        started_at=engine_time(str(state.get("StartedAt", ""))),
        finished_at=engine_time(str(state.get("FinishedAt", ""))),
    )


def rehearse(
    client: docker.DockerClient,
    pod: DeclaredPod,
    on_line: Callable[[str], None] | None = None,
    stop_after_holding: float = 5.0,
) -> Outcome:
    """Run the declared container to its end and remove it.

    A ceiling below the limit holds forever: once the hog says it is holding, it is left to hold for
    `stop_after_holding` seconds and then stopped the way Kubernetes would stop it (SIGTERM, then the grace period).
    So does a supervised container whose worker was killed and restarted: it would go on so.
    """
    grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
    with tempfile.TemporaryDirectory(prefix="oom-killer-") as workdir:
        container, termination_file = start(client, pod, Path(workdir))
        stopper = threading.Timer(stop_after_holding, container.stop, kwargs={"timeout": grace})

        seen_child_exit = False

        def watch(line: str) -> None:
            nonlocal seen_child_exit
            # Held at a ceiling; or a supervised worker killed and a new one started in the container that lived.
            restarted = seen_child_exit and line.startswith("event=start ")
            seen_child_exit = seen_child_exit or line.startswith("event=child_exit ")
            if (line.startswith("event=holding ") or restarted) and stopper.ident is None:
                stopper.start()
            if on_line is not None:
                on_line(line)

        try:
            return follow(container, termination_file, watch)
        finally:
            stopper.cancel()
            container.remove(force=True)
