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
from pathlib import Path
from typing import TYPE_CHECKING, Final

from oomtools import verdict
from oomtools.arguments import Parser, UsageError, add_stack_arguments, exit_codes, stack_overrides
from oomtools.errors import one_line, root_cause
from workload import logfmt
from workload.memory import MIB

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
    from oomtools.rehearsal import stack_pod
    from oomtools.render import stack_file

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
    env = pod.environment
    source = f"as the {stack} stack declares it"
    if overrides:
        source += ", with --set " + " ".join(f"{key}={value}" for key, value in overrides.items())
    from oomtools.rehearsal import pod_level, pod_scope, predicted_span

    return (
        f"demo: running it {source}{pod_scope(pod)}: memory limit {pod.limits['memory']}{pod_level(pod)} "
        f"(no swap), +{env['MEMORY_INCREMENT_MB']} MiB every {env['INCREMENT_INTERVAL_MS']} ms, read-only, no network"
        f"{predicted_span(pod)}"
    )


def run(args: argparse.Namespace) -> int:
    import docker.errors
    import requests.exceptions

    from oomtools.rehearsal import (
        ImageUnavailable,
        build_image,
        fits_engine,
        leftovers,
        memory_bytes,
        rehearse,
        sweep,
    )

    def say(message: str) -> None:  # what it is doing, unless --quiet
        if not args.quiet:
            print(f"demo: {message}", flush=True)

    overrides = stack_overrides(args.stack, args.overrides)
    pod = declared(args.stack, overrides)
    client = engine()
    limit_bytes = memory_bytes(pod.limits["memory"])
    info = client.info()
    too_large = fits_engine(limit_bytes, int(info.get("MemTotal") or 0))
    if too_large:
        raise DemoError(EXIT_BAD_CONFIG, f"memoryLimitMb={limit_bytes // MIB}: {too_large}")
    swept = sweep(leftovers(client))
    if swept:
        say(f"removed {len(swept)} container(s) an interrupted or killed rehearsal left: {', '.join(swept)}")

    env = pod.environment
    limit = pod.limits["memory"]
    say(f"{'building' if pod.build else 'using'} {pod.container['image']} ...")
    try:
        build_image(client, pod, on_progress=lambda step: say(f"  {step}"))
    except ImageUnavailable as error:
        raise DemoError(EXIT_NO_IMAGE, str(error)) from error
    say(banner(args.stack, overrides, pod).removeprefix("demo: "))
    try:
        outcome = rehearse(
            client,
            pod,
            on_line=None if args.quiet else lambda line: print(f"  {line}", flush=True),
            on_phase=say,
            keep=args.keep,
            remove_in_background=True,  # the verdict is said while the engine removes it
        )
    except docker.errors.APIError as error:
        raise DemoError(
            EXIT_ENGINE_REFUSED,
            f"the Docker engine refused to run the container: {one_line(error)}",
        ) from error
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise DemoError(EXIT_ENGINE_REFUSED, f"the Docker engine failed while running it: {one_line(error)}") from error

    events = [fields for fields in map(logfmt.parse, outcome.lines) if "event" in fields]
    judged = verdict.judge_run(env, events, outcome.oom_killed, outcome.exit_code)
    timing = kill_timing(outcome, pod.predicted_seconds)
    limit_mib = memory_bytes(limit) // MIB
    if judged.by_kind:
        kind, model = verdict.memory_kind(env), verdict.process_model(env)
        shown = dict(
            verdict=judged.happened,
            predicted=judged.predicted,
            memory_kind=kind.name,
            process_model=model.name,
            **judged.fields,
            docker_oom_killed=outcome.oom_killed,
            exit_code=outcome.exit_code,
            **timing,
            limit_mib=limit_mib,
            seconds=round(outcome.seconds, 1),
        )
    else:
        shown = dict(
            verdict=judged.happened,
            predicted=judged.predicted,
            oom_killed=outcome.oom_killed,
            exit_code=outcome.exit_code,
            **judged.fields,
            **timing,
            limit_mib=limit_mib,
            seconds=round(outcome.seconds, 1),
            termination_message=outcome.termination_message.strip(),
        )
    print(logfmt.line(**shown), flush=True)
    code = EXIT_AS_PREDICTED if judged.item.ok else EXIT_NOT_AS_PREDICTED
    if args.report or args.json or args.junit:
        from oomtools import demo_report

        run = demo_report.DemoRun(args.stack, env, limit_mib, pod.predicted_seconds, outcome, judged, shown, info)
        if args.report:
            demo_report.write_report(args.report, run)
        if args.json:
            demo_report.write_json(args.json, run, code)
        if args.junit:
            demo_report.write_junit(args.junit, run)
    if args.keep:
        say(f"kept {outcome.container}: docker inspect {outcome.container}; oom-killer clean removes it")
    return code


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


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """demo's arguments and help (for its own parser, and for `oom-killer demo` in the command's tree)."""
    parser.description = __doc__
    parser.epilog = exit_codes(CODE_MEANINGS)
    add_stack_arguments(parser)
    parser.add_argument(
        "--quiet", action="store_true", help="print only the verdict line (and a failure's line): no steps, no progress"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the container on the engine when it ends, for docker inspect (oom-killer clean removes it)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write one self-contained HTML page here: memory per step against the limit, the kill, the checks "
        "(docs/report.md)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the verdict as JSON here")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write the checks as a JUnit XML report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    from oomtools.rehearsal import finish_removals

    parser = configure(Parser(prog="oom-killer demo"))
    try:
        try:
            return run(parser.parse_args(argv))
        finally:
            finish_removals()  # a container being removed beside the verdict is gone before the command ends
    except UsageError as error:
        print(f"demo: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("demo: interrupted; the container was removed (or never made)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
