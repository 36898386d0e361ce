# PYTHON_ARGCOMPLETE_OK
"""The project's tools as one command, `oom-killer`, beside the Pulumi program (which it never runs for real).

Each subcommand exits with its own codes, listed in its --help. `make demo` and `make verify` run this command; make
itself exits 2 on any failure, and shows the command's own code in its message (`Error 4`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from oomtools import clean, demo, doctor, resize, verify
from oomtools.arguments import Parser, UsageError, add_stack_arguments, exit_codes, stack_overrides

DISTRIBUTION: Final = "oom-killer"

RENDER_DESCRIPTION: Final = """Print what a stack declares, as `pulumi up` would send it, with no Pulumi CLI, cluster
or engine: the program runs under Pulumi's own mocks. The Kubernetes objects as YAML documents (for `kubectl apply
--dry-run=server -f -`, a diff, a policy check), or with --outputs the stack's outputs as JSON, as `pulumi stack
output --json` prints them once deployed (the image's digest aside), for `oom-killer verify --outputs`.

    oom-killer render [--stack dev] [--set memoryLimitMb=64 ...] [--outputs]
"""
RENDER_CODE_MEANINGS: Final = {0: "printed", 2: "a bad argument or stack config value (one line says which)"}


def version() -> str:
    """The project's version: the installed distribution's, or pyproject.toml's in a checkout not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])


def configure_render(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = RENDER_DESCRIPTION
    parser.epilog = exit_codes(RENDER_CODE_MEANINGS)
    add_stack_arguments(parser)
    parser.add_argument(
        "--outputs", action="store_true", help="print the stack's outputs as JSON instead of its Kubernetes objects"
    )
    return parser


def render_main(argv: list[str]) -> int:
    try:
        args = configure_render(Parser(prog="oom-killer render")).parse_args(argv)
        overrides = stack_overrides(args.stack, args.overrides)
    except UsageError as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    import yaml

    from infra.settings import ConfigError
    from oomtools.render import render, stack_config

    try:
        rendered = render({**stack_config(args.stack), **overrides}, stack_name=args.stack)
    except (ConfigError, yaml.YAMLError) as error:
        print(f"render: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    # The same bytes for the same input (a diff, a policy check): keys sorted, but a manifest's head kept first.
    if args.outputs:
        print(json.dumps(rendered.exports, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump_all(rendered.kubernetes_objects(), sort_keys=False), end="")
    return 0


# Each subcommand's main, given the arguments after its name.
COMMANDS: Final[dict[str, Callable[[list[str]], int]]] = {
    "demo": demo.main,
    "verify": verify.main,
    "resize": resize.main,
    "render": render_main,
    "doctor": doctor.main,
    "clean": clean.main,
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command, subcommands and all: for the top-level --help, --version and shell completion."""
    parser = Parser(prog="oom-killer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"oom-killer {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo.configure(
        commands.add_parser("demo", help="rehearse on Docker, no cluster: run the container as the stack declares it")
    )
    verify.configure(
        commands.add_parser("verify", help="watch a deployed stack and say whether what its settings predict happened")
    )
    resize.configure(
        commands.add_parser(
            "resize", help="change the running hog's memory limit in place and judge what the kubelet did"
        )
    )
    configure_render(commands.add_parser("render", help="print the Kubernetes objects (or outputs) a stack declares"))
    doctor.configure(
        commands.add_parser("doctor", help="check what demo, up and verify need here (engine, image, cluster, rights)")
    )
    clean.configure(commands.add_parser("clean", help="remove the containers (and with --images the images) left"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (register-python-argcomplete): answer, exit
        import argcomplete

        argcomplete.autocomplete(parser)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])  # each subcommand reads its own arguments, and its own errors
    try:
        args = parser.parse_args(argv)  # --help and --version exit here; anything else is an error
    except UsageError as error:
        print(f"oom-killer: {error}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](argv[argv.index(args.command) + 1 :])


if __name__ == "__main__":
    raise SystemExit(main())
