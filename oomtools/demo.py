"""Run the container exactly as a stack declares it on your Docker engine, no cluster needed, until the kernel
OOM-kills it, and say whether what happened is what the stack's settings predict.

Builds the image and runs the container as the stack (the dev stack unless told otherwise) declares it, shows each
step as it happens, and ends with a verdict line: what happened, what the settings predict, and the fields that show
it. It passes when the two agree (OOMKilled; or held below the limit where a ceiling or page cache keeps it there;
or a supervised worker killed with the container alive). Every failure is one line and an exit code of its own,
listed below.

    oom-killer demo [--stack dev] [--set memoryLimitMb=64 ...]       (or: make demo ARGS="--set ...")

Honours DOCKER_HOST (which engine) and BASE_IMAGE (the Dockerfile's base, e.g. a local mirror).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Final

from oomtools.arguments import Parser, UsageError, add_stack_arguments, exit_codes, stack_overrides
from workload import logfmt
from workload.memory import MIB
from workload.predict import KillRange

if TYPE_CHECKING:  # imported where they are used: --help, bad arguments and completion need none of them
    import docker

    from oomtools.rehearsal import DeclaredPod, Outcome

EXIT_AS_PREDICTED: Final = 0  # what happened is what the settings predict
EXIT_NOT_AS_PREDICTED: Final = 1  # it ran, and ended otherwise
EXIT_BAD_CONFIG: Final = 2  # a bad argument or stack config value; nothing was run
EXIT_NO_ENGINE: Final = 3  # no Docker engine answers
EXIT_NO_IMAGE: Final = 4  # the image, or the base image its build needs, cannot be had, or the build failed
EXIT_ENGINE_REFUSED: Final = 5  # the engine refused to run the container, or failed while it ran
EXIT_NOTHING_TO_RUN: Final = 6  # replicas=0: the stack declares no pod
EXIT_INTERRUPTED: Final = 130  # Ctrl-C; the container is removed

# What --help says of each exit code.
CODE_MEANINGS: Final = {
    EXIT_AS_PREDICTED: "what happened is what the settings predict: the verdict line's verdict= and predicted= agree, "
    "and each kill came in a step its hog announced",
    EXIT_NOT_AS_PREDICTED: "it ran and ended otherwise (verdict= and predicted= differ)",
    EXIT_BAD_CONFIG: "a bad argument or stack config value; nothing was run",
    EXIT_NO_ENGINE: "no Docker engine answers (at DOCKER_HOST, or the default socket)",
    EXIT_NO_IMAGE: "the image cannot be had: the base image is neither on the engine nor pullable (set BASE_IMAGE), "
    "a prebuilt image is neither, or the build failed",
    EXIT_ENGINE_REFUSED: "the engine refused to run the container, or failed while it ran",
    EXIT_NOTHING_TO_RUN: "replicas=0: the stack declares no pod, so nothing would run",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); the container is removed",
}
DEFAULT_DOCKER_HOST: Final = "unix:///var/run/docker.sock"  # the Docker SDK's, where DOCKER_HOST is unset


class DemoError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def declared(stack: str, overrides: dict[str, str]) -> DeclaredPod:
    """The stack's pod, or a DemoError saying in one line why there is none to run."""
    import yaml

    from infra.settings import ConfigError
    from oomtools.rehearsal import one_line, stack_pod
    from oomtools.render import stack_file

    if not stack_file(stack).exists():
        print(
            f"demo: there is no {stack_file(stack).name}: the {stack} stack runs on the project's defaults, "
            "as `pulumi up` would run a new stack",
            file=sys.stderr,
        )
    try:
        pod = stack_pod(stack, overrides)
    except ConfigError as error:
        raise DemoError(EXIT_BAD_CONFIG, str(error)) from error
    except yaml.YAMLError as error:
        raise DemoError(EXIT_BAD_CONFIG, f"{stack_file(stack).name} is not valid YAML: {one_line(error)}") from error
    if pod.replicas == 0:
        raise DemoError(
            EXIT_NOTHING_TO_RUN,
            f"replicas=0: the {stack} stack declares no pod, so nothing would run (and nothing be OOM-killed)",
        )
    return pod


def root_cause(error: BaseException) -> str:
    """What an engine error comes down to, in a few words: the socket's own error where there is one (No such file
    or directory, Connection refused, Permission denied), else the error's own line."""
    from oomtools.rehearsal import one_line

    pending, seen = [error], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [link for link in (current.__cause__, current.__context__) if link is not None]
    return one_line(error)


def engine_address() -> tuple[str, str]:
    """Where the Docker SDK looks for the engine, and why there."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"], "DOCKER_HOST"
    return DEFAULT_DOCKER_HOST, "DOCKER_HOST is unset: the default socket"


def engine() -> docker.DockerClient:
    """The engine at DOCKER_HOST (or the default socket), or a DemoError naming the address it tried."""
    import docker
    import docker.errors

    address, which = engine_address()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise DemoError(
            EXIT_NO_ENGINE, f"no Docker engine answers at {address} ({which}): {root_cause(error)}"
        ) from error
    return client


def banner(stack: str, overrides: dict[str, str], pod: DeclaredPod) -> str:
    """The line before the run: what runs, and whether --set changed the stack's own settings for it."""
    env = {item["name"]: item["value"] for item in pod.container["env"]}
    source = f"as the {stack} stack declares it"
    if overrides:
        source += ", with --set " + " ".join(f"{key}={value}" for key, value in overrides.items())
    return (
        f"demo: running it {source}: memory limit {pod.container['resources']['limits']['memory']} (no swap), "
        f"+{env['MEMORY_INCREMENT_MB']} MiB every {env['INCREMENT_INTERVAL_MS']} ms, read-only, no network"
    )


def run(args: argparse.Namespace) -> int:
    import docker.errors
    import requests.exceptions

    from oomtools.rehearsal import ImageUnavailable, build_image, memory_bytes, one_line, rehearse

    overrides = stack_overrides(args.stack, args.overrides)
    pod = declared(args.stack, overrides)
    client = engine()

    env = {item["name"]: item["value"] for item in pod.container["env"]}
    limit = pod.container["resources"]["limits"]["memory"]
    print(f"demo: {'building' if pod.build else 'using'} {pod.container['image']} ...", flush=True)
    try:
        build_image(client, pod)
    except ImageUnavailable as error:
        raise DemoError(EXIT_NO_IMAGE, str(error)) from error
    print(banner(args.stack, overrides, pod), flush=True)
    try:
        outcome = rehearse(client, pod, on_line=lambda line: print(f"  {line}", flush=True))
    except docker.errors.APIError as error:
        raise DemoError(
            EXIT_ENGINE_REFUSED,
            f"the Docker engine refused to run the container: {one_line(error)}",
        ) from error
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise DemoError(EXIT_ENGINE_REFUSED, f"the Docker engine failed while running it: {one_line(error)}") from error

    events = [fields for fields in map(logfmt.parse, outcome.lines) if "event" in fields]
    kind, model = env.get("MEMORY_KIND", "anonymous"), env.get("PROCESS_MODEL", "single")
    timing = kill_timing(outcome, pod.predicted_seconds)
    kind_verdict = verdict_of(kind, model, events, outcome.exit_code)
    if kind_verdict is not None:
        verdict, predicted, fields = kind_verdict
        print(
            logfmt.line(
                verdict=verdict,
                predicted=predicted,
                memory_kind=kind,
                process_model=model,
                **fields,
                docker_oom_killed=outcome.oom_killed,
                exit_code=outcome.exit_code,
                **timing,
                limit_mib=memory_bytes(limit) // MIB,
                seconds=round(outcome.seconds, 1),
            ),
            flush=True,
        )
        return EXIT_AS_PREDICTED if verdict == predicted else EXIT_NOT_AS_PREDICTED

    steps = [fields for fields in events if fields.get("event") == "step"]
    last_allocated = steps[-1]["allocated_mib"] if steps else "0"
    # A ceiling holds it below the limit (the settings leave room for the baseline); without one, the kernel kills.
    predicted = "held-below-limit" if env.get("MEMORY_CEILING_MB", "0") not in ("", "0") else "OOMKilled"
    on_time, where = kill_fields(events, outcome.exit_code == 137)
    if outcome.oom_killed and outcome.exit_code == 137:
        # As predicted only in a step the hog announced at its start (its own charge, what the kernel may take back).
        happened = "OOMKilled" if on_time else "OOMKilled-outside-announced-steps"
    elif any(fields.get("event") == "holding" for fields in events) and outcome.exit_code == 0:
        happened = "held-below-limit"  # held at the ceiling until the demo stopped it
    else:
        happened = "ended-otherwise"
    print(
        logfmt.line(
            verdict=happened,
            predicted=predicted,
            oom_killed=outcome.oom_killed,
            exit_code=outcome.exit_code,
            last_allocated_mib=int(last_allocated),
            **where,
            **timing,
            limit_mib=memory_bytes(limit) // MIB,
            seconds=round(outcome.seconds, 1),
            termination_message=outcome.termination_message.strip(),
        ),
        flush=True,
    )
    return EXIT_AS_PREDICTED if happened == predicted else EXIT_NOT_AS_PREDICTED


def kill_timing(outcome: Outcome, stack_predicted: dict[str, float] | None) -> dict[str, object]:
    """When the first kill came, each time beside the prediction it compares with (none of these where no kill came).

    - `seconds_from_first_step` and `predicted_seconds`: from the killed hog's first step (which follows its start
      line at once) to the kill, and what its start line predicted for the same (the expected step's pauses);
    - `seconds_from_start` and `predicted_seconds_from_start`: from the container's start to its end, as Kubernetes'
      startedAt and finishedAt and `make verify` count (the interpreter's start-up included), and the stack's
      `predictedSecondsToOomKill`: the single hog's kill only, a supervised worker's leaves the container running.

    Both measured on the engine's clock; `seconds` in the verdict is the whole run on the demo's own (the engine's
    report of the end, and any holding, included).
    """
    start_at: float | None = None
    predicted = "none"
    killed_at: float | None = None
    container_killed = outcome.oom_killed and outcome.exit_code == 137
    for line, at in zip(outcome.lines, outcome.line_times, strict=False):
        if line.startswith("event=start "):
            start_at, predicted = at, logfmt.parse(line).get("predicted_seconds", "none")  # a worker's own
        elif line.startswith("event=child_exit ") and "signal=SIGKILL" in line.split():
            killed_at = at
            break
    else:
        killed_at = outcome.finished_at if container_killed else None
    fields: dict[str, object] = {}
    if start_at is not None and killed_at is not None:
        fields.update(seconds_from_first_step=round(killed_at - start_at, 1), predicted_seconds=predicted)
    if container_killed and outcome.started_at is not None and outcome.finished_at is not None:
        fields["seconds_from_start"] = round(outcome.finished_at - outcome.started_at, 1)
        if stack_predicted:
            fields["predicted_seconds_from_start"] = f"{stack_predicted['earliest']:g}..{stack_predicted['latest']:g}"
    return fields


def kills_against_announced(events: list[dict[str, str]], container_killed: bool) -> list[tuple[int, KillRange]]:
    """Each hog's kill step (one past the last step it logged) with the range its own start line announced: a
    supervised worker's ends in a SIGKILL child_exit, the single hog's in the container's own OOM kill."""
    found: list[tuple[int, KillRange]] = []
    announced: KillRange | None = None
    steps = 0
    for fields in events:
        event = fields.get("event")
        if event == "start":
            announced, steps = _announced(fields), 0
        elif event == "step":
            steps += 1
        elif event == "child_exit":
            if fields.get("signal") == "SIGKILL" and announced is not None:
                found.append((steps + 1, announced))
            announced = None
    if container_killed and announced is not None:
        found.append((steps + 1, announced))
    return found


def _announced(start: dict[str, str]) -> KillRange | None:
    try:
        return KillRange(
            int(start["predicted_steps_earliest"]),
            int(start["predicted_steps"]),
            int(start["predicted_steps_latest"]),
            int(start.get("interval_ms", "0")),
        )
    except (KeyError, ValueError):
        return None  # no kill announced (a ceiling or page cache): nothing to hold a kill to


def kill_fields(events: list[dict[str, str]], container_killed: bool) -> tuple[bool, dict[str, object]]:
    """(every kill came in a step its hog announced, the verdict line's fields saying where in the range)."""
    kills = kills_against_announced(events, container_killed)
    fields: dict[str, object] = {}
    if kills:
        fields["killed_in_step"] = ",".join(str(step) for step, _ in kills)
        fields["announced_steps"] = ",".join(f"{r.earliest}..{r.latest}" for _, r in kills)
        fields["where"] = ",".join(r.where(step) for step, r in kills)
    return all(r.holds(step) for step, r in kills), fields


def verdict_of(
    kind: str, model: str, events: list[dict[str, str]], exit_code: int
) -> tuple[str, str, dict[str, object]] | None:
    """For memoryKind pagecache and processModel supervised: (what happened, what the settings predict, the
    fields that show it). None for the other cases, whose verdict is OOMKilled or not."""
    if kind != "pagecache" and model != "supervised":
        return None
    starts = [e for e in events if e["event"] in ("start", "supervisor_start")]
    oom_group = next((e["oom_group"] for e in starts if "oom_group" in e), "none")
    # Page cache is reclaimed, never killed; a supervised worker is killed alone unless the kernel kills the group.
    predicted = "held-below-limit" if kind == "pagecache" else "OOMKilled" if oom_group == "1" else "worker-killed"
    holding = [e for e in events if e["event"] == "holding"]
    child_exits = [e for e in events if e["event"] == "child_exit"]
    fields: dict[str, object] = {"oom_group": oom_group}
    if exit_code == 137:
        happened = "OOMKilled"
    elif kind == "pagecache" and holding and exit_code == 0:
        happened = "held-below-limit"
        fields.update(
            # Written: the files on disk, in the page cache as they were written. Charged: what the cgroup counts
            # against its limit (the kernel reclaimed the rest of the cache); the working set, what the kubelet sees.
            files_written_mib=int(holding[-1]["allocated_mib"]),
            cgroup_usage_mib=holding[-1].get("cgroup_usage_mib", "none"),
            limit_pct=holding[-1].get("limit_pct", "none"),
            working_set_mib=holding[-1].get("working_set_mib", "none"),
            file_mib=holding[-1].get("file_mib", "none"),
        )
    elif any(e.get("signal") == "SIGKILL" for e in child_exits) and exit_code == 0:
        happened = "worker-killed"  # a worker that exited otherwise (its own error, say) was not killed
        fields.update(
            worker_kills=sum(e.get("signal") == "SIGKILL" for e in child_exits),
            oom_kill_count=child_exits[-1].get("oom_kill", "none"),
            container_survived=True,
        )
    else:
        happened = "ended-otherwise"
    if model == "supervised" and kind == "pagecache" and child_exits:
        happened = "worker-killed"  # page cache should never have killed it: say what did happen
    on_time, where = kill_fields(events, exit_code == 137)
    fields.update(where)
    if happened in ("worker-killed", "OOMKilled") and not on_time:
        happened += "-outside-announced-steps"
    return happened, predicted, fields


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """demo's arguments and help (for its own parser, and for `oom-killer demo` in the command's tree)."""
    parser.description = __doc__
    parser.epilog = exit_codes(CODE_MEANINGS)
    add_stack_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = configure(Parser(prog="oom-killer demo"))
    try:
        return run(parser.parse_args(argv))
    except UsageError as error:
        print(f"demo: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("demo: interrupted; the container was removed", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
