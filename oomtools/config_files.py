"""Pulumi.yaml's config block and the settings table of docs/configuration.md, generated from the settings' table
(infra/table.py), so that each key is written once. `make test` fails while either file is stale.

    python -m oomtools.config_files --write   # regenerate both
    python -m oomtools.config_files --check   # exit 1, naming the stale files, if either differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, TextIO

import yaml

from infra.table import ROWS, Setting

PROJECT_DIR: Final = Path(__file__).resolve().parent.parent
PULUMI_YAML: Final = PROJECT_DIR / "Pulumi.yaml"
CONFIGURATION_DOC: Final = PROJECT_DIR / "docs" / "configuration.md"
REGENERATE: Final = "venv/bin/python -m oomtools.config_files --write"
DOC_BEGIN: Final = f"<!-- the settings table: generated from infra/table.py by `{REGENERATE}` -->"
DOC_END: Final = "<!-- end of the settings table -->"


def _scalar(value: bool | int | str) -> str:
    """A YAML scalar: plain where YAML reads it back as the same string, else double-quoted (JSON's quoting is
    YAML's)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    plain = value != "" and ": " not in value and " #" not in value and value[0] not in "\"'!&*[]{}|>%@`#,?-:"
    return value if plain and yaml.safe_load(value) == value else json.dumps(value)


def config_block(rows: tuple[Setting, ...] = ROWS) -> str:
    """Pulumi.yaml's `config:` block: each key's type, default and description."""
    lines = ["config:"]
    for row in rows:
        lines += [
            f"  {row.key}:",
            f"    type: {row.type}",
            f"    default: {_scalar(row.default)}",
            f"    description: {_scalar(row.summary)}",
        ]
    return "\n".join(lines) + "\n"


def pulumi_yaml(current: str) -> str:
    """Pulumi.yaml with its config block (the last block of the file) generated; what comes before it as written."""
    found = re.search(r"^config:\n", current, re.MULTILINE)
    head = current[: found.start()] if found else current.rstrip("\n") + "\n"
    return head + config_block()


def settings_table(rows: tuple[Setting, ...] = ROWS) -> str:
    """The docs' Markdown table of the keys."""
    lines = ["| key | type | default | what it does |", "| --- | --- | --- | --- |"]
    for row in rows:
        default = '""' if row.default == "" else _scalar(row.default)
        lines.append(f"| `{row.key}` | {row.type} | `{default}` | {row.doc} |")
    return "\n".join(lines) + "\n"


def configuration_doc(current: str) -> str:
    """docs/configuration.md with the table between its markers generated; the rest of the page as written."""
    begin, end = current.index(DOC_BEGIN) + len(DOC_BEGIN), current.index(DOC_END)
    return current[:begin] + "\n" + settings_table() + current[end:]


Generated = tuple[tuple[Path, Callable[[str], str]], ...]
GENERATED: Final[Generated] = ((PULUMI_YAML, pulumi_yaml), (CONFIGURATION_DOC, configuration_doc))


def stale(files: Generated = GENERATED) -> list[Path]:
    """The generated files that differ from what the table makes of them."""
    return [path for path, make in files if make(path.read_text()) != path.read_text()]


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m oomtools.config_files", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--write", action="store_true", help="regenerate Pulumi.yaml's config block and the docs' table"
    )
    action.add_argument("--check", action="store_true", help="exit 1 if either is out of date")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(GENERATED)
        for path in outdated:
            print(f"{path.relative_to(PROJECT_DIR)} is out of date with infra/table.py: run {REGENERATE}", file=err)
        return 1 if outdated else 0
    for path, make in GENERATED:
        path.write_text(make(path.read_text()))
        print(f"wrote {path.relative_to(PROJECT_DIR)}", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
