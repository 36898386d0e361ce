"""What the `oom-killer` command's subcommands share: the help's layout (each option's default, the exit codes as
written), argument errors as one line, and the stack arguments of `demo` and `render`.

Stdlib only at import, so that `--help`, `--version` and shell completion answer at once: the tools import pulumi,
docker and kubernetes when they run, not before.
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
from pathlib import Path
from typing import Any, NoReturn

# Pulumi's own rule for a stack name.
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# The project's folder, where the stack files are (Pulumi.<stack>.yaml).
PROJECT_DIR = Path(__file__).resolve().parent.parent


class UsageError(Exception):
    """A bad argument: one line, and the subcommand's exit code for it (2 in each)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help, where it has one (not None, False or []); the description and the epilog
    (the exit codes) as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if action.option_strings and not unset and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a UsageError (one line) rather than the usage and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # A value that starts with a minus and a digit (`--timeout -5m`) is a value, never an option: no option of
        # this command starts with a digit. argparse's own rule takes only plain negative numbers, and said "expected
        # one argument" for -5m instead of letting the option's own check name the value.
        self._negative_number_matcher = re.compile(r"^-\d")

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def exit_codes(codes: dict[int, str]) -> str:
    """The exit codes as the epilog of a subcommand's --help."""
    lines = ["exit codes:"]
    for code, meaning in codes.items():
        lines.append(textwrap.fill(meaning, 100, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7))
    return "\n".join(lines)


def setting_names(prefix: str, **_: object) -> list[str]:
    """Shell completion of --set: the stack's settings as `key=`, then a key's values where it has a few (choices,
    true and false), from the settings' table (stdlib only: no Pulumi on TAB)."""
    from infra.table import SETTINGS

    key, equals, _value = prefix.partition("=")
    if not equals:
        return [f"{name}=" for name in SETTINGS if name.startswith(prefix)]
    row = SETTINGS.get(key)
    return [f"{key}={value}" for value in (row.values() if row else ()) if f"{key}={value}".startswith(prefix)]


def stack_names(prefix: str = "", **_: object) -> list[str]:
    """The stacks of this checkout, from their files (Pulumi.<stack>.yaml): what --stack takes, and completes."""
    names = sorted(path.name[len("Pulumi.") : -len(".yaml")] for path in PROJECT_DIR.glob("Pulumi.*.yaml"))
    return [name for name in names if name.startswith(prefix)]


def check_stack(stack: str) -> None:
    """A UsageError unless the stack has a file here: a mistyped --stack would otherwise run the project's defaults
    and pass, never having rehearsed the stack meant."""
    if _STACK_NAME.fullmatch(stack) is None:
        raise UsageError(f"--stack {stack!r}: a stack name is letters, digits, '-', '_' and '.'")
    if (PROJECT_DIR / f"Pulumi.{stack}.yaml").exists():
        return
    known = stack_names()
    near = difflib.get_close_matches(stack, known, n=1)
    guess = f"did you mean {near[0]}? " if near else ""
    raise UsageError(
        f"--stack {stack}: there is no Pulumi.{stack}.yaml ({guess}stacks here: {', '.join(known) or 'none'}); "
        f"for a stack on the project's defaults, make its file first: touch Pulumi.{stack}.yaml"
    )


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """--stack and --set: the stack's config as Pulumi.<stack>.yaml has it, with values for this run over it."""
    stack = parser.add_argument(
        "--stack", default="dev", help="the stack whose Pulumi.<stack>.yaml to use (TAB completes the stacks here)"
    )
    stack.completer = stack_names  # type: ignore[attr-defined]  # argcomplete reads it
    setting = parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a stack config value for this run only, over the stack file's, checked as the program checks it "
        "(repeatable; e.g. memoryLimitMb=64; the keys: docs/configuration.md; TAB completes keys and choices)",
    )
    setting.completer = setting_names  # type: ignore[attr-defined]  # argcomplete reads it


def stack_overrides(stack: str, pairs: list[str]) -> dict[str, str]:
    """The --stack name checked (a stack file of this checkout) and the --set pairs as a dict; a UsageError naming
    the first bad one."""
    check_stack(stack)
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes key=value, got {pair!r}")
        overrides[key] = value
    from infra.table import SETTINGS, Invalid, nearest_setting  # stdlib: the settings' table

    for key, value in overrides.items():
        row = SETTINGS.get(key)
        if row is None:
            near = nearest_setting(key)
            guess = f": did you mean {near}?" if near else f" (one of: {', '.join(SETTINGS)})"
            raise UsageError(f"--set {key}={value}: not a setting of this project{guess}")
        try:
            row.parse(value)  # the value alone; the rules between keys are the program's, on the whole config
        except Invalid as error:
            raise UsageError(str(error)) from error
    return overrides
