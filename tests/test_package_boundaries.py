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


# The pure scheduling core and its policy modules: fed events with the time, answering with
# decisions. No sockets, no event loop, no clock of its own, no wire types.
CORE_MODULES = (
    "core/*.py",
    "decomposer/*.py",
    "recovery/*.py",
    "ratelimit/*.py",
    "cache/*.py",
    "tuning/*.py",
)
IO_MODULES = (
    "grpc", "grpc_health", "grpc_reflection", "asyncio", "aiohttp", "aetcd", "socket",
    "subprocess", "threading", "time", "deerflow_protos", "deerflow_common.etcd",
)  # fmt: skip


def _core_files() -> list[Path]:
    files = sorted({p for pattern in CORE_MODULES for p in CONTROLLER.glob(pattern)})
    assert len(files) > 20, f"the core's module list matches only {len(files)} files: update it"
    return files


def _io_import(module: str) -> bool:
    return any(module == io or module.startswith(io + ".") for io in IO_MODULES)


def test_the_scheduling_core_imports_no_io_and_no_clock() -> None:
    offenders = [
        f"{path.relative_to(CONTROLLER.parent)}:{line} imports {module}"
        for path in _core_files()
        for line, module in _imported_modules(ast.parse(path.read_text(), str(path)))
        if _io_import(module)
    ]

    assert offenders == []


def test_the_core_check_catches_an_event_loop_or_a_wire_type() -> None:
    tree = ast.parse("import asyncio\nfrom deerflow_protos import agent_pb2\nimport heapq\n")

    assert [m for _, m in _imported_modules(tree) if _io_import(m)] == [
        "asyncio",
        "deerflow_protos",
    ]
