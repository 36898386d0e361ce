"""workload/kinds.py: each memory kind and process model described once, what the hog, the stack and the judges read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infra.table import SETTINGS
from tests.test_layout import imported_modules
from workload import kinds
from workload.kinds import HELD, OOM_KILLED, PAGECACHE, SINGLE, SUPERVISED, TMPFS, expected_end, restarts_into_full_pod


def test_the_descriptions_import_nothing_the_hog_would_pay_for() -> None:
    path = Path(kinds.__file__)
    assert imported_modules(path) <= {"__future__", "__future__.annotations"}
    tree = ast.parse(path.read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.decorator_list]


def test_the_stack_offers_exactly_the_kinds_and_models_described() -> None:
    assert SETTINGS["memoryKind"].choices == tuple(kinds.KINDS) == ("anonymous", "tmpfs", "pagecache")
    assert SETTINGS["processModel"].choices == tuple(kinds.MODELS) == ("single", "supervised")
    assert SETTINGS["memoryKind"].default == "anonymous"
    assert SETTINGS["processModel"].default == "single"


@pytest.mark.parametrize(
    ("kind", "model", "oom_group", "end"),
    [
        ("anonymous", "single", None, OOM_KILLED),
        ("tmpfs", "single", None, OOM_KILLED),
        ("pagecache", "single", None, HELD),
        ("anonymous", "supervised", False, kinds.WORKER_KILLED),
        ("anonymous", "supervised", True, OOM_KILLED),  # memory.oom.group=1 kills PID 1 with its worker
        ("pagecache", "supervised", True, HELD),
    ],
)
def test_how_a_run_ends_by_its_kind_and_model(kind: str, model: str, oom_group: bool | None, end: str) -> None:
    assert expected_end(kinds.memory_kind(kind), kinds.process_model(model), False, oom_group) == end
    assert expected_end(kinds.memory_kind(kind), kinds.process_model(model), True, oom_group) == HELD


def test_only_a_single_tmpfs_hog_restarts_into_a_full_pod() -> None:
    full = [(k, m) for k in kinds.KINDS.values() for m in kinds.MODELS.values() if restarts_into_full_pod(k, m)]
    assert full == [(TMPFS, SINGLE)]


def test_the_baseline_and_room_count_each_interpreter() -> None:
    assert (SINGLE.baseline_max_mib, SUPERVISED.baseline_max_mib) == (16, 32)
    assert (SINGLE.room_mib(128), SUPERVISED.room_mib(128)) == (112, 96)
    assert PAGECACHE.hold_ceiling_mib(None, 128) == 256
    assert PAGECACHE.hold_ceiling_mib(300, 128) == 300
    assert TMPFS.hold_ceiling_mib(None, 128) is None
