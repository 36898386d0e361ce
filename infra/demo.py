"""`make demo`: the no-cluster rehearsal. Builds the image and runs the container exactly as a stack declares it
(the dev stack unless told otherwise) on your Docker engine, shows each step as it happens, and ends with a
verdict line. Exit 0 only when the kernel OOM-killed it (exit code 137).

    python -m infra.demo [--stack dev] [--set memoryLimitMb=64 ...]

Honours DOCKER_HOST (which engine) and BASE_IMAGE (the Dockerfile's base, e.g. a local mirror).
"""

from __future__ import annotations

import argparse
import sys

import docker
import docker.errors

from infra.rehearsal import build_image, memory_bytes, rehearse, stack_pod
from infra.settings import ConfigError
from workload import logfmt
from workload.memory import MIB

EXIT_NOT_OOM_KILLED = 1
EXIT_NO_ENGINE = 3
EXIT_BAD_CONFIG = 2


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"demo: --set takes key=value, got {pair!r}")
        overrides[key] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="the stack whose Pulumi.<stack>.yaml to use (default: dev)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    try:
        pod = stack_pod(args.stack, parse_overrides(args.overrides))
    except ConfigError as error:
        print(f"demo: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        print(f"demo: no Docker engine answers (DOCKER_HOST or the default socket): {error}", file=sys.stderr)
        return EXIT_NO_ENGINE

    env = {item["name"]: item["value"] for item in pod.container["env"]}
    limit = pod.container["resources"]["limits"]["memory"]
    print(f"demo: building {pod.container['image']} ...", flush=True)
    build_image(client, pod)
    print(
        f"demo: running it as the {args.stack} stack declares it: memory limit {limit} (no swap), "
        f"+{env['MEMORY_INCREMENT_MB']} MiB every {env['INCREMENT_INTERVAL_MS']} ms, read-only, no network",
        flush=True,
    )
    outcome = rehearse(client, pod, on_line=lambda line: print(f"  {line}", flush=True))

    steps = [fields for fields in map(logfmt.parse, outcome.lines) if fields.get("event") == "step"]
    last_allocated = steps[-1]["allocated_mib"] if steps else "0"
    print(
        logfmt.line(
            verdict="OOMKilled" if outcome.oom_killed else "not-oom-killed",
            oom_killed=outcome.oom_killed,
            exit_code=outcome.exit_code,
            last_allocated_mib=int(last_allocated),
            limit_mib=memory_bytes(limit) // MIB,
            seconds=round(outcome.seconds, 1),
            termination_message=outcome.termination_message.strip(),
        ),
        flush=True,
    )
    if outcome.oom_killed and outcome.exit_code == 137:
        return 0
    if any(line.startswith("event=holding ") for line in outcome.lines):
        print("demo: it held at memoryCeilingMb below the limit, as configured, and was stopped", file=sys.stderr)
    return EXIT_NOT_OOM_KILLED


if __name__ == "__main__":
    raise SystemExit(main())
