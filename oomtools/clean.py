"""`oom-killer clean`: remove what rehearsals left on the Docker engine.

Every rehearsal's container is labelled `oom-killer.rehearsal=true`. A run removes its own on every path out, and the
next run removes those of a process that died (kill -9, a crash); what is left is a container kept with `demo --keep`,
or one another machine's run left on a shared engine. This removes them; one still in use by a rehearsal running on
this host (its process alive, and not kept) is left unless --force. With --images, also the images the rehearsals
built (`oom-killer:<tag>`).

    oom-killer clean [--force] [--images]
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from oomtools.arguments import Parser, UsageError, exit_codes
from oomtools.errors import one_line

EXIT_CLEAN: Final = 0
EXIT_BAD_ARGUMENTS: Final = 2
EXIT_NO_ENGINE: Final = 3
EXIT_ENGINE_FAILED: Final = 5
CODE_MEANINGS: Final = {
    EXIT_CLEAN: "done: what it removed (or that there was nothing) on one line each",
    EXIT_BAD_ARGUMENTS: "a bad argument",
    EXIT_NO_ENGINE: "no Docker engine answers (at DOCKER_HOST, or the default socket)",
    EXIT_ENGINE_FAILED: "the engine refused or failed to remove something (one line says what)",
}


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = __doc__
    parser.epilog = exit_codes(CODE_MEANINGS)
    parser.add_argument(
        "--force", action="store_true", help="remove a container a rehearsal running on this host still uses, too"
    )
    parser.add_argument("--images", action="store_true", help="also remove the images rehearsals built (oom-killer:*)")
    return parser


def run(args: argparse.Namespace) -> int:
    import docker.errors

    from oomtools import demo
    from oomtools.rehearsal import KEPT_LABEL, OWNER_LABEL, owner_alive, rehearsal_containers, sweep

    try:
        client = demo.engine()
    except demo.DemoError as error:
        print(f"clean: {str(error).removeprefix('demo: ')}", file=sys.stderr)
        return EXIT_NO_ENGINE
    try:
        found = rehearsal_containers(client)
        in_use = [c for c in found if KEPT_LABEL not in c.labels and owner_alive(c.labels.get(OWNER_LABEL, ""))]
        removed = sweep([c for c in found if args.force or c not in in_use])
        for name in removed:
            print(f"clean: removed container {name}")
        for container in [] if args.force else in_use:
            print(
                f"clean: left container {container.name}: a rehearsal running on this host is using it "
                f"({OWNER_LABEL}={container.labels[OWNER_LABEL]}); --force removes it"
            )
        images = 0
        if args.images:
            for image in client.images.list(name="oom-killer"):
                client.images.remove(str(image.id), force=True)
                images += 1
                print(f"clean: removed image {', '.join(image.tags) or image.short_id}")
    except docker.errors.DockerException as error:
        print(f"clean: the Docker engine failed: {one_line(error)}", file=sys.stderr)
        return EXIT_ENGINE_FAILED
    if not removed and not images:
        print("clean: no rehearsal container" + (" or image" if args.images else "") + " to remove")
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> int:
    try:
        return run(configure(Parser(prog="oom-killer clean")).parse_args(argv))
    except UsageError as error:
        print(f"clean: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
