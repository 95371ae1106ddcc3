"""The shell is the only way to feed the core: no controller module but ``shell.py`` calls a
scheduler method that changes its state, or schedules the flush of its decisions. Services call
one :class:`~deerflow_controller.service.shell.Shell` method per event, which applies it and
schedules the flush itself, so no call site can forget the flush (issue #14)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import deerflow_controller
from deerflow_controller.core.scheduler import Scheduler

CONTROLLER = Path(deerflow_controller.__file__).parent
SHELL = CONTROLLER / "service" / "shell.py"

READERS = frozenset(
    {"declared_slots", "known_handlers", "next_timer", "prefetch_for", "queued", "restored_waiting"}
)
"""The scheduler's public methods that only read its state; every other one changes it. Add a
new reader here; a new method missing from this set counts as a mutator."""

MUTATORS = frozenset(
    name
    for name, _ in inspect.getmembers(Scheduler, inspect.isfunction)
    if not name.startswith("_") and name not in READERS
)
FLUSH_SCHEDULERS = frozenset({"changed", "_changed"})


def _is_scheduler(node: ast.expr, aliases: set[str]) -> bool:
    """``node`` is ``<anything>.scheduler`` or a local name bound to one."""
    if isinstance(node, ast.Attribute):
        return node.attr == "scheduler"
    return isinstance(node, ast.Name) and node.id in aliases


def _scheduler_aliases(scope: ast.AST) -> set[str]:
    """Names that ``scope`` binds to ``<anything>.scheduler`` (``sched = shell.scheduler``)."""
    aliases: set[str] = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and _is_scheduler(node.value, set()):
            aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and _is_scheduler(node.value, set())
            and isinstance(node.target, ast.Name)
        ):
            aliases.add(node.target.id)
    return aliases


def _core_feeding_calls(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, call) of every mutating scheduler call and every flush scheduling in ``tree``,
    through ``x.scheduler`` or a function's local alias of it."""
    found: set[tuple[int, str]] = set()
    scopes: list[ast.AST] = [tree]
    scopes += [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for scope in scopes:
        aliases = _scheduler_aliases(scope) if scope is not tree else set()
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            func = node.func
            if func.attr in FLUSH_SCHEDULERS or (
                func.attr in MUTATORS and _is_scheduler(func.value, aliases)
            ):
                found.add((node.lineno, f"{ast.unparse(func)}()"))
    return sorted(found)


def test_no_module_but_the_shell_changes_the_scheduler_or_schedules_its_flush() -> None:
    offenders = [
        f"{path.relative_to(CONTROLLER.parent)}:{line} calls {call}"
        for path in sorted(CONTROLLER.rglob("*.py"))
        if path != SHELL
        for line, call in _core_feeding_calls(ast.parse(path.read_text(), str(path)))
    ]

    assert offenders == [], "feed the core through one Shell method per event instead"


def test_the_walk_sees_mutators_called_through_an_alias_and_flushes_scheduled_by_hand() -> None:
    tree = ast.parse(
        "def f(shell):\n"
        "    sched = shell.scheduler\n"
        "    sched.queued()\n"
        "    sched.agent_left('a', 1.0)\n"
        "    shell.changed()\n"
        "def g(self):\n"
        "    self.shell.scheduler.cancel('j', None, 'r', 1.0)\n"
        "    sched.agent_left('not an alias here', 1.0)\n"
    )

    assert _core_feeding_calls(tree) == [
        (4, "sched.agent_left()"),
        (5, "shell.changed()"),
        (7, "self.shell.scheduler.cancel()"),
    ]
