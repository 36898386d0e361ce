"""The declared pod, run on a Docker engine the way a kubelet would run it.

`make demo` and the end-to-end test share this: render the program (under mocks) for a stack's config, build
the image exactly as the declared docker Image says, translate the workload's container (the Deployment's, or with
scope=node the DaemonSet's: one pod either way) into a container on the engine (memory limit without swap, CPU,
env, user, read-only root, dropped capabilities, no new privileges, no network, the termination message file
mounted), then follow its log to the end and read what the engine says of its death.

No container is left behind: each is labelled with the process that made it (`oom-killer.rehearsal.owner`,
host:pid) and removed on every path out (an interrupt while the engine is still creating it is held until the engine
answers, so that there is a container id to remove); one left by a process that died (a kill -9, a crash) is removed
by the next rehearsal on the same host, and `oom-killer clean` removes them all. `--keep` leaves the container, labelled
kept, for `docker inspect`, until `oom-killer clean`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from infra.names import STOPPED_NODE_SELECTOR
from oomtools.errors import one_line
from oomtools.render import PROJECT_DIR, Rendered, render, stack_config

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
WORKLOADS = (DEPLOYMENT, DAEMON_SET)  # a stack declares one of the two (scope)
IMAGE = "docker:index/image:Image"

# The labels of a rehearsal's container: every one (what `oom-killer clean` removes), the process that made it (a
# leftover is one whose process is gone), and one left on purpose (--keep: the next run's sweep leaves it).
REHEARSAL_LABEL = "oom-killer.rehearsal"
OWNER_LABEL = "oom-killer.rehearsal.owner"
KEPT_LABEL = "oom-killer.rehearsal.kept"
# The kubelet's smallest CFS quota (its MinQuotaPeriod, 1 ms of each 100 ms period): it raises a smaller CPU limit to
# this, while the kernel refuses a smaller quota outright (runc's "invalid argument"). So 10m, in billionths.
KUBELET_MIN_NANO_CPUS = 10_000_000

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


def owner() -> str:
    """This process, as the owner label names it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class DeclaredPod:
    build: dict[str, Any] | None  # the docker Image resource's inputs, None for a prebuilt image
    spec: dict[str, Any]  # the workload's pod template spec
    container: dict[str, Any]
    replicas: int = 1  # a DaemonSet's: 1, or 0 where its nodeSelector stops it
    # The stack's predictedSecondsToOomKill export ({"earliest": s, "latest": s} from the container's start), None
    # where no kill is predicted.
    predicted_seconds: dict[str, float] | None = None
    kind: str = "Deployment"  # the workload's kind: Deployment, or DaemonSet (scope=node)

    @property
    def limits(self) -> dict[str, str]:
        """The limits the container runs under: its own, over the pod's (limitScope=pod declares them on the pod and
        none on the container, which then runs under the pod's)."""
        return {
            **self.spec.get("resources", {}).get("limits", {}),
            **self.container.get("resources", {}).get("limits", {}),
        }

    @property
    def environment(self) -> dict[str, str]:
        """The container's variables, as the kubelet sets them: a value, or (the Downward API) a resource of the
        container, its limit falling back to the pod's, in its divisor's unit, rounded up as the kubelet rounds it."""
        environment = {}
        for item in self.container.get("env", []):
            reference = item.get("valueFrom", {}).get("resourceFieldRef")
            if reference is None:
                environment[item["name"]] = item.get("value", "")
                continue
            if reference["resource"] != "limits.memory":
                raise ValueError(f"a Downward API resource this translation does not know: {reference['resource']}")
            divisor = memory_bytes(reference.get("divisor", "1"))
            environment[item["name"]] = str(-(-memory_bytes(self.limits["memory"]) // divisor))
        return environment


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
    kind = "DaemonSet" if workload.type == DAEMON_SET else "Deployment"
    return DeclaredPod(images[0].inputs if images else None, pod, container, replicas, predicted, kind)


def stack_pod(stack: str = "dev", overrides: dict[str, str] | None = None) -> DeclaredPod:
    """The pod a stack declares; BASE_IMAGE from the environment becomes its baseImage (as in CI).

    Which base wins: `--set baseImage=...`, then BASE_IMAGE, then the stack file's baseImage, then the Dockerfile's.
    """
    config = {**stack_config(stack), **(overrides or {})}
    if os.environ.get("BASE_IMAGE") and "baseImage" not in (overrides or {}):
        config["baseImage"] = os.environ["BASE_IMAGE"]
    return declared_pod(render(config, stack_name=stack))


def run_options(pod: DeclaredPod, termination_file: Path) -> dict[str, Any]:
    """The workload's container as keyword arguments of docker's containers.run(), as a kubelet would run it."""
    container, spec = pod.container, pod.spec
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    limits = pod.limits
    options: dict[str, Any] = {
        "image": container["image"],
        "environment": pod.environment,
        "network_mode": "none",  # the namespace's NetworkPolicy denies everything
        "read_only": bool(security.get("readOnlyRootFilesystem")),
        "cap_drop": security.get("capabilities", {}).get("drop", []),
        "cap_add": security.get("capabilities", {}).get("add", []),
        "security_opt": [] if security.get("allowPrivilegeEscalation", True) else ["no-new-privileges"],
        "stop_signal": "SIGTERM",
        "volumes": {str(termination_file): {"bind": container["terminationMessagePath"], "mode": "rw"}},
        "labels": {
            "io.kubernetes.container.name": container["name"],
            REHEARSAL_LABEL: "true",
            OWNER_LABEL: owner(),
        },
    }
    if "runAsUser" in security:
        group = security.get("runAsGroup", security["runAsUser"])
        options["user"] = f"{security['runAsUser']}:{group}"
    if "memory" in limits:
        # The kubelet gives a container no swap: the memory limit is the memory+swap limit too.
        options["mem_limit"] = options["memswap_limit"] = memory_bytes(limits["memory"])
    if "cpu" in limits:
        options["nano_cpus"] = max(nano_cpus(limits["cpu"]), KUBELET_MIN_NANO_CPUS)  # as the kubelet raises it
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


def ensure_image(
    client: docker.DockerClient,
    reference: str,
    pull_policy: str = "IfNotPresent",
    on_progress: Callable[[str], None] | None = None,
) -> None:
    """Have the image on the engine as a kubelet would, by the pull policy: a local image is not pulled again."""
    if pull_policy != "Always":
        try:
            client.images.get(reference)
            return
        except docker.errors.ImageNotFound:
            if pull_policy == "Never":
                raise ImageUnavailable(f"{reference} is not on the Docker engine (imagePullPolicy Never)") from None
    if on_progress is not None:
        on_progress(f"pulling {reference}")
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


# What to tell a user whose engine cannot have the base image: the three ways to one (the README's first screen too).
BASE_IMAGE_ADVICE = (
    "set BASE_IMAGE to an image with python3 3.11+ that the engine has or can pull (your mirror: "
    "BASE_IMAGE=mirror.example.com/library/python:3.12-slim make demo), or make one from Debian packages: "
    "make base-image, then make demo BASE_IMAGE=oom-killer-base:bookworm (docs/demo.md#no-registry)"
)


def build_image(client: docker.DockerClient, pod: DeclaredPod, on_progress: Callable[[str], None] | None = None) -> str:
    """Build the image as the declared docker Image says (context, Dockerfile, build args, tag); return its tag.

    The declared platform is left to the engine: a rehearsal runs on this machine's own architecture. A prebuilt
    image is fetched by the container's pull policy instead. Raises ImageUnavailable, in one line, when the image
    or the build's base image cannot be had, or the build fails. `on_progress` hears of a pull, and of each of the
    build's steps as the engine starts it (`Step 3/9 : COPY ...`): a build on a slow storage driver takes a minute.
    """
    if pod.build is None:
        pull_policy = str(pod.container.get("imagePullPolicy", "IfNotPresent"))
        ensure_image(client, str(pod.container["image"]), pull_policy, on_progress)
        return str(pod.container["image"])
    build = pod.build["build"]
    tag = str(pod.build["imageName"])
    args = build.get("args") or {}
    base = args.get("BASE_IMAGE") or dockerfile_base_image(Path(build["dockerfile"]))
    try:
        ensure_image(client, base, on_progress=on_progress)
    except ImageUnavailable as error:
        raise ImageUnavailable(f"the base image {error}; {BASE_IMAGE_ADVICE}") from error
    # The low-level call streams the engine's words as it builds (the high-level one only at its end).
    chunks = client.api.build(
        path=build["context"],
        dockerfile=build["dockerfile"],
        buildargs=args,
        tag=tag,
        rm=True,
        forcerm=True,  # an interrupted or failed build leaves no intermediate container
        pull=False,
        network_mode=build.get("network"),
        decode=True,
    )
    try:
        for chunk in chunks:
            if "error" in chunk:
                raise ImageUnavailable(f"building {tag} failed: {' '.join(str(chunk['error']).split())}")
            said = str(chunk.get("stream", "")).strip()
            if on_progress is not None and said.startswith("Step "):
                on_progress(said if len(said) <= 100 else said[:97] + "...")
    except docker.errors.APIError as error:
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
    container: str = ""  # the container's name on the engine (kept there with keep=True)


def engine_time(stamp: str) -> float | None:
    """An engine's RFC 3339 time (nanoseconds, `Z`) in POSIX seconds; None for its zero time or no time at all."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return None if when.year == 1 else when.timestamp()


@contextlib.contextmanager
def interrupt_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block ends, then raise it: around a call to the engine that must be answered
    (the create whose container id is needed to remove it, the removal itself). In the main thread only (where
    Python delivers signals); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def container_name() -> str:
    """A name of its own for each rehearsal's container."""
    return f"oom-killer-rehearsal-{secrets.token_hex(4)}"


def create(client: docker.DockerClient, pod: DeclaredPod, workdir: Path, keep: bool = False) -> tuple[Container, Path]:
    """Create the declared container, not started; the termination message file is made here, writable by the
    pod's user. An interrupt while the engine creates it is held until it answers (and then raised)."""
    termination_file = workdir / "termination-log"
    termination_file.touch()
    termination_file.chmod(0o666)
    options = run_options(pod, termination_file)
    if keep:
        options["labels"][KEPT_LABEL] = "true"
    created: list[Container] = []
    try:
        with interrupt_held():
            created.append(client.containers.create(name=container_name(), **options))
    except KeyboardInterrupt:  # pressed while the engine made it: made, so removed before the interrupt goes on
        for container in created:
            remove(container)
        raise
    return created[0], termination_file


def start(client: docker.DockerClient, pod: DeclaredPod, workdir: Path) -> tuple[Container, Path]:
    """Create and start the declared container (the caller removes it)."""
    container, termination_file = create(client, pod, workdir)
    try:
        container.start()
    except BaseException:
        remove(container)
        raise
    return container, termination_file


def remove(container: Container) -> None:
    """Remove a container, running or not, whatever is pressed meanwhile (an interrupt is raised once it is gone)."""
    with interrupt_held(), contextlib.suppress(docker.errors.NotFound):  # gone already
        container.remove(force=True)


# Removals left to run beside the verdict (rehearse(remove_in_background=True)): finish_removals() waits for them.
_removals: list[threading.Thread] = []


def finish_removals() -> None:
    """Wait for the containers being removed in the background to be gone (an interrupt is held meanwhile)."""
    with interrupt_held():
        while _removals:
            _removals.pop().join()


def _owner_state(owner_label: str) -> bool | None:
    """Whether the process an owner label names is alive: None where it cannot be told (another host's, no label)."""
    host, _, pid = owner_label.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def owner_alive(owner_label: str) -> bool:
    """Whether the process an owner label names is alive on this host."""
    return _owner_state(owner_label) is True


def _owner_gone(owner_label: str) -> bool:
    """Whether the process an owner label names is gone: only this host's processes can be told."""
    return _owner_state(owner_label) is False


def rehearsal_containers(client: docker.DockerClient) -> list[Container]:
    """Every rehearsal's container on the engine, running or not."""
    return list(client.containers.list(all=True, filters={"label": f"{REHEARSAL_LABEL}=true"}))


def leftovers(client: docker.DockerClient) -> list[Container]:
    """Rehearsals' containers that nobody will remove: made on this host by a process that is gone, and not kept."""
    return [
        container
        for container in rehearsal_containers(client)
        if KEPT_LABEL not in container.labels and _owner_gone(container.labels.get(OWNER_LABEL, ""))
    ]


def sweep(containers: list[Container]) -> list[str]:
    """Remove these containers; their names."""
    names = []
    for container in containers:
        remove(container)
        names.append(str(container.name))
    return names


def pod_scope(pod: DeclaredPod) -> str:
    """What of the stack the rehearsal runs, where the stack declares more than one pod: said in the banner."""
    if pod.kind == "DaemonSet":
        return " (one pod of its DaemonSet: scope=node runs one on every node it may go to)"
    if pod.replicas > 1:
        return f" (one pod of its {pod.replicas} replicas)"
    return ""


def pod_level(pod: DeclaredPod) -> str:
    """ " (the pod's)" in the banner where the limit is the pod's (limitScope=pod); a single container runs it here."""
    return " (the pod's)" if "memory" in pod.spec.get("resources", {}).get("limits", {}) else ""


def predicted_span(pod: DeclaredPod) -> str:
    """When the stack predicts the kill, from the container's start, for the banner ("" where none is predicted)."""
    if not pod.predicted_seconds:
        return ""
    earliest, latest = pod.predicted_seconds["earliest"], pod.predicted_seconds["latest"]
    if latest >= 3600:
        return f"; the kill predicted in {earliest / 3600:.1f} to {latest / 3600:.1f} hours"
    return f"; the kill predicted {earliest:g} to {latest:g} s after it starts"


def fits_engine(limit_bytes: int, engine_bytes: int) -> str | None:
    """Why a memory limit is too large for the Docker engine's machine, or None where it fits: a container whose
    limit is the machine's memory or more would press on the host (its other processes, swap, the host's own OOM
    killer) long before the kernel kills it at its limit, and the run would last hours."""
    if engine_bytes <= 0 or limit_bytes < engine_bytes:
        return None
    return (
        f"it is not below the Docker engine's memory ({engine_bytes / (1 << 30):.1f} GiB): the host would run short "
        f"before the container reached its limit; at most {engine_bytes // (1 << 20) - 1} on this engine"
    )


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
    *,
    on_phase: Callable[[str], None] | None = None,
    keep: bool = False,
    remove_in_background: bool = False,
) -> Outcome:
    """Run the declared container to its end and remove it (on every path out: an error, an interrupt).

    A ceiling below the limit holds forever: once the hog says it is holding, it is left to hold for
    `stop_after_holding` seconds and then stopped the way Kubernetes would stop it (SIGTERM, then the grace period).
    So does a supervised container whose worker was killed and restarted: it would go on so.

    `on_phase` hears what the engine is doing before the first line (creating the container: seconds on a slow
    storage driver; starting it). `keep` leaves the container on the engine, labelled kept, for `docker inspect`.
    `remove_in_background`: once it has ended, the removal (seconds on a slow storage driver) runs beside the
    caller, who says its verdict meanwhile and then waits in finish_removals().
    """
    grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
    with tempfile.TemporaryDirectory(prefix="oom-killer-") as workdir:
        if on_phase is not None:
            on_phase("creating the container (the engine copies the image for it)")
        container, termination_file = create(client, pod, Path(workdir), keep=keep)
        ended = False
        stopper = threading.Timer(stop_after_holding, container.stop, kwargs={"timeout": grace})
        try:  # from the container's creation on: every way out removes it
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

            container.start()
            if on_phase is not None:
                on_phase(f"started {container.name}")
            outcome = follow(container, termination_file, watch)
            outcome.container = str(container.name)
            ended = True
            return outcome
        finally:
            stopper.cancel()
            if keep and ended:
                pass  # labelled kept: for docker inspect, until oom-killer clean (an interrupted one is removed)
            elif ended and remove_in_background:
                removal = threading.Thread(target=remove, args=(container,), name=f"remove {container.name}")
                removal.start()
                _removals.append(removal)
            else:
                remove(container)
