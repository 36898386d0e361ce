"""infra/ holds only what the program declares with: a reader sees at a glance which code `pulumi up` runs."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import PROJECT


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_every_infra_module_is_used_by_the_program_and_no_tool_is() -> None:
    reached: set[str] = set()
    pending = [PROJECT / "__main__.py"]
    while pending:
        for module in imported_modules(pending.pop()):
            path = PROJECT / (module.replace(".", "/") + ".py")
            if module.startswith(("infra.", "oomtools")) and module not in reached:
                reached.add(module)
                if path.exists():
                    pending.append(path)
    infra = {f"infra.{path.stem}" for path in (PROJECT / "infra").glob("*.py") if path.stem != "__init__"}
    assert infra <= reached, f"not used by __main__.py, so not infra's: {sorted(infra - reached)}"
    assert not {module for module in reached if module.startswith("oomtools")}, "pulumi up must not run the tools"


def test_the_kill_prediction_lives_in_a_module_with_no_side_effects() -> None:
    """workload/predict.py is shared by the workload and the stack: pure functions, a value class and constants
    over its one import."""
    tree = ast.parse((PROJECT / "workload" / "predict.py").read_text())
    statements = [node for node in tree.body if not isinstance(node, ast.FunctionDef | ast.ImportFrom)]
    constants = [node for node in statements if isinstance(node, ast.Assign)]
    for constant in constants:  # NAME = an expression of literals and names: nothing is called at import
        (target,) = constant.targets
        assert isinstance(target, ast.Name), ast.dump(target)
        assert target.id.isupper(), target.id
        assert not any(isinstance(node, ast.Call) for node in ast.walk(constant.value)), target.id
    classes = [node for node in statements if isinstance(node, ast.ClassDef)]
    for defined in classes:  # methods and __slots__ only: no state at the class level
        for member in defined.body[1:]:
            slots = isinstance(member, ast.Assign) and ast.unparse(member.targets[0]) == "__slots__"
            assert isinstance(member, ast.FunctionDef) or slots, ast.dump(member)
    # besides: only the docstring
    rest = [node for node in statements if node not in constants and node not in classes]
    assert len(rest) == 1
    assert isinstance(rest[0], ast.Expr)
    assert imported_modules(PROJECT / "workload" / "predict.py") <= {
        "__future__",
        "__future__.annotations",
        "workload.memory",
        "workload.memory.MIB",
    }
