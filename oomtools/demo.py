"""`make demo`: the no-cluster rehearsal. Builds the image and runs the container exactly as a stack declares it
(the dev stack unless told otherwise) on your Docker engine, shows each step as it happens, and ends with a
verdict line naming what happened and what the stack's settings predict. Exit 0 when the two agree (OOMKilled, or
held below the limit where a ceiling or page cache keeps it there, or a supervised worker killed with the container
alive); every failure is one line and an exit code of its own (EXIT_* below, listed in the README).

    python -m oomtools.demo [--stack dev] [--set memoryLimitMb=64 ...]

Honours DOCKER_HOST (which engine) and BASE_IMAGE (the Dockerfile's base, e.g. a local mirror).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

import docker
import docker.errors
import requests.exceptions
import yaml

from infra.settings import ConfigError
from oomtools.rehearsal import DeclaredPod, ImageUnavailable, build_image, memory_bytes, one_line, rehearse, stack_pod
from oomtools.render import stack_file
from workload import logfmt
from workload.memory import MIB
from workload.predict import KillRange

EXIT_AS_PREDICTED = 0  # what happened is what the settings predict
EXIT_NOT_AS_PREDICTED = 1  # it ran, and ended otherwise
EXIT_BAD_CONFIG = 2  # a bad argument or stack config value; nothing was run
EXIT_NO_ENGINE = 3  # no Docker engine answers
EXIT_NO_IMAGE = 4  # the image, or the base image its build needs, cannot be had, or the build failed
EXIT_ENGINE_REFUSED = 5  # the engine refused to run the container, or failed while it ran
EXIT_NOTHING_TO_RUN = 6  # replicas=0: the stack declares no pod
EXIT_INTERRUPTED = 130  # Ctrl-C; the container is removed

# Pulumi's own rule for a stack name.
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class DemoError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise DemoError(EXIT_BAD_CONFIG, f"{message} (see --help)")


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DemoError(EXIT_BAD_CONFIG, f"--set takes key=value, got {pair!r}")
        overrides[key] = value
    return overrides


def declared(stack: str, overrides: dict[str, str]) -> DeclaredPod:
    """The stack's pod, or a DemoError saying in one line why there is none to run."""
    if _STACK_NAME.fullmatch(stack) is None:
        raise DemoError(EXIT_BAD_CONFIG, f"--stack {stack!r}: a stack name is letters, digits, '-', '_' and '.'")
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


def engine() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise DemoError(
            EXIT_NO_ENGINE, f"no Docker engine answers (DOCKER_HOST or the default socket): {error}"
        ) from error
    return client


def run(args: argparse.Namespace) -> int:
    pod = declared(args.stack, parse_overrides(args.overrides))
    client = engine()

    env = {item["name"]: item["value"] for item in pod.container["env"]}
    limit = pod.container["resources"]["limits"]["memory"]
    print(f"demo: {'building' if pod.build else 'using'} {pod.container['image']} ...", flush=True)
    try:
        build_image(client, pod)
    except ImageUnavailable as error:
        raise DemoError(EXIT_NO_IMAGE, str(error)) from error
    print(
        f"demo: running it as the {args.stack} stack declares it: memory limit {limit} (no swap), "
        f"+{env['MEMORY_INCREMENT_MB']} MiB every {env['INCREMENT_INTERVAL_MS']} ms, read-only, no network",
        flush=True,
    )
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
            limit_mib=memory_bytes(limit) // MIB,
            seconds=round(outcome.seconds, 1),
            termination_message=outcome.termination_message.strip(),
        ),
        flush=True,
    )
    return EXIT_AS_PREDICTED if happened == predicted else EXIT_NOT_AS_PREDICTED


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
            held_mib=int(holding[-1]["allocated_mib"]),
            cgroup_usage_mib=holding[-1].get("cgroup_usage_mib", "none"),
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


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="the stack whose Pulumi.<stack>.yaml to use (default: dev)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    try:
        return run(parser.parse_args(argv))
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("demo: interrupted; the container was removed", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
