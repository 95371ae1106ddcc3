"""LangChain stays in the drop-ins: no other part of the product imports it, so the daemons,
the SDK and the simulator run without the ``deerflow`` extra. The one exception is the
DeerFlow-shaped example's two bench modules (``deerflow demo --deerflow``), which play DeerFlow
through the drop-ins and load only when that command runs. ``deerflow_dropins._cluster`` (the
connection every drop-in calls through) imports no LangChain, checked below, so the latency
benchmark may time the drop-ins' one-task call through it."""

from __future__ import annotations

import ast
import subprocess
import sys
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
LANGCHAIN_FREE = {"deerflow_dropins._cluster"}
"""Drop-in modules other packages may import: they load no LangChain (a test says so)."""
EXAMPLE = {
    Path(str(deerflow_bench.__file__)).parent / n for n in ("_example.py", "example_subagents.py")
}


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
    files = [p for root in roots for p in sorted(root.rglob("*.py")) if p not in EXAMPLE]
    offenders = [
        f"{path}:{line} imports {module}"
        for path in files
        for line, module in _imports(path)
        if any(module == name or module.startswith(name + ".") for name in LANGCHAIN)
        and module not in LANGCHAIN_FREE
    ]

    assert len(files) > 100
    assert offenders == []


def test_the_bench_commands_load_without_langchain_until_the_example_runs() -> None:
    probe = (
        "import sys, deerflow_bench, deerflow_bench._cli, deerflow_bench._demo\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain_core', 'deerflow_dropins'))\n"
        "print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"


def test_the_langchain_free_dropin_modules_load_no_langchain() -> None:
    probe = (
        "import importlib, sys\n"
        f"for name in {sorted(LANGCHAIN_FREE)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain', 'langchain_core', 'langgraph')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"


def test_the_dropins_use_only_the_public_sdk_of_the_controller() -> None:
    """Built on the SDK as DeerFlow would use it: no controller internals (the core, the
    services, the shell), so the drop-ins keep working across the controller's refactors."""
    import deerflow_dropins

    root = Path(str(deerflow_dropins.__file__)).parent
    offenders = [
        f"{path.name}:{line} imports {module}"
        for path in sorted(root.rglob("*.py"))
        for line, module in _imports(path)
        if module.startswith("deerflow_controller") and module != "deerflow_controller.client"
    ]

    assert offenders == []
