"""docs/workload-log.md names every field of every line the workload writes on stdout, on the lines it is written on:
read from the workload's own code (each `event=` line it builds), so a field added or moved is a failing test."""

from __future__ import annotations

import ast
import re

from tests.support import PROJECT

SOURCES = [PROJECT / "workload" / "main.py", PROJECT / "workload" / "supervise.py"]
PAGE = (PROJECT / "docs" / "workload-log.md").read_text()


def written_fields() -> set[tuple[str, str]]:
    """(event, field) for each line the workload builds with a literal event (its error lines, on stderr, aside)."""
    found: set[tuple[str, str]] = set()
    for source in SOURCES:
        tree = ast.parse(source.read_text())
        dicts: dict[str, str] = {}  # a variable holding a line's fields -> its event
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                words = {k.arg: k.value for k in node.keywords if k.arg}
                event, level = words.get("event"), words.get("level")
                if isinstance(event, ast.Constant) and level is None:
                    found |= {(str(event.value), name) for name in words if name != "event"}
                    # **({} if ... else {"removed_files": n}): the literal keys of a dict spread into the line
                    spread = [k.value for k in node.keywords if k.arg is None]
                    for inner in (n for value in spread for n in ast.walk(value) if isinstance(n, ast.Dict)):
                        keys = [k.value for k in inner.keys if isinstance(k, ast.Constant)]
                        found |= {(str(event.value), str(key)) for key in keys}
            if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
                keys = [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
                values = dict(zip(keys, node.value.values, strict=False))
                event_node = values.get("event")
                if isinstance(event_node, ast.Constant):
                    found |= {(str(event_node.value), str(key)) for key in keys if key != "event"}
                    targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                    dicts |= {t.id: str(event_node.value) for t in targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):  # fields added to such a dict afterwards: stop["removed_files"] = ...
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
                target = node.targets[0]
                named = isinstance(target.value, ast.Name) and target.value.id in dicts
                if named and isinstance(target.value, ast.Name) and isinstance(target.slice, ast.Constant):
                    found.add((dicts[target.value.id], str(target.slice.value)))
    return found


def documented() -> set[tuple[str, str]]:
    """(event, field) for each row of the page's table: its fields in backticks, the lines it names."""
    pairs: set[tuple[str, str]] = set()
    for line in PAGE.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        # The line's events; "where", "v2" say when a field appears, not on which line.
        events = set(re.findall(r"[a-z_]+", cells[1].split("(")[0])) - {"where", "v2"}
        pairs |= {(event, field) for field in re.findall(r"`([a-z_0-9]+)`", cells[0]) for event in events}
    return pairs


def test_every_field_the_workload_writes_is_documented_on_its_line() -> None:
    # The issue found event=holding and the hog's own stop fields missing, and removed_files missing on child_exit.
    written = written_fields()
    assert ("holding", "ceiling_mib") in written  # the reader sees what it must
    assert ("child_exit", "removed_files") in written
    assert written - documented() == set()


def test_no_field_is_documented_on_a_line_that_never_carries_it() -> None:
    # The memory_dir "on stop lines": not there.
    claimed = {(event, field) for event, field in documented() if field == "memory_dir"}
    assert claimed <= written_fields()
