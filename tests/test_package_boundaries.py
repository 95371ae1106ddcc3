"""The controller runs without the agent's package: no controller module imports it (handlers'
splitters and mergers come through ``deerflow_common.plugins`` instead)."""

from __future__ import annotations

import ast
from pathlib import Path

import deerflow_controller

CONTROLLER = Path(deerflow_controller.__file__).parent
AGENT = "deerflow_agent"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``, nested ones (inside functions) included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_controller_module_imports_the_agent_package() -> None:
    offenders = [
        f"{path.relative_to(CONTROLLER.parent)}:{line} imports {module}"
        for path in sorted(CONTROLLER.rglob("*.py"))
        for line, module in _imported_modules(ast.parse(path.read_text(), str(path)))
        if module == AGENT or module.startswith(AGENT + ".")
    ]

    assert offenders == []


def test_the_walk_sees_imports_nested_in_functions() -> None:
    tree = ast.parse("def f():\n    from deerflow_agent.registry import HandlerRegistry\n")

    assert _imported_modules(tree) == [(2, "deerflow_agent.registry")]
