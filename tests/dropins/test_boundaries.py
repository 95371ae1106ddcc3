"""LangChain stays in the drop-ins: no other part of the product imports it, so the daemons,
the SDK and the simulator run without the ``deerflow`` extra."""

from __future__ import annotations

import ast
from pathlib import Path

import deerflow_agent
import deerflow_bench
import deerflow_common
import deerflow_controller
import deerflow_protos
import deerflow_simulator

PACKAGES = (
    deerflow_agent,
    deerflow_bench,
    deerflow_common,
    deerflow_controller,
    deerflow_protos,
    deerflow_simulator,
)
LANGCHAIN = ("langchain", "langchain_core", "langgraph", "deerflow_dropins")


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_module_outside_the_dropins_imports_langchain_or_the_dropins() -> None:
    roots = [Path(str(pkg.__file__)).parent for pkg in PACKAGES]
    files = [p for root in roots for p in sorted(root.rglob("*.py"))]
    offenders = [
        f"{path}:{line} imports {module}"
        for path in files
        for line, module in _imports(path)
        if any(module == name or module.startswith(name + ".") for name in LANGCHAIN)
    ]

    assert len(files) > 100
    assert offenders == []
