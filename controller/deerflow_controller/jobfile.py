"""Job files for ``deerflow submit``: tasks as a JSON array, as ``{"tasks": [...]}``, or as JSON
lines (one task object per line), checked field by field before anything is sent.

The keys a task may carry are the fields of the SDK's :class:`~deerflow_controller.client.Task`,
read from the dataclass itself: a field added to ``Task`` is accepted here with no change as long
as its annotation is one of the types in ``_CHECKS`` (a new type is one line there). Fields with
a narrower set of values than their type get one line in ``_FIELD_CHECKS``. ``payload_b64`` is
the one key that is not a Task field: a binary payload, base64-encoded.

Every problem is a :class:`JobFileError` whose message is one sentence naming the file, the line
(and column, for JSON syntax), the task and the key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import json
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deerflow_controller.client import Task
from deerflow_controller.client._types import _CACHE_POLICIES, INPUTS_ALL

PAYLOAD_B64 = "payload_b64"


class JobFileError(Exception):
    """A job file that cannot be read or holds a task that is not well formed; ``str()`` is
    the one-line message for the person who wrote the file."""


class _BadValue(Exception):
    """A value of the wrong type or out of its set; the message follows the key's name."""


Check = Callable[[object], object]
"""Takes a decoded JSON value; returns what the Task field gets or raises _BadValue."""


def _show(value: object) -> str:
    """The offending value as JSON, cut short: enough to find it, never the whole input."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValue(f"must be a string, got {_show(value)}")
    return value


def _integer(value: object) -> int:
    # bool is an int to Python, but `"priority": true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadValue(f"must be an integer, got {_show(value)}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadValue(f"must be a number, got {_show(value)}")
    if not math.isfinite(value):
        raise _BadValue(f"must be a finite number, got {_show(value)}")
    return float(value)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _BadValue(f"must be true or false, got {_show(value)}")
    return value


def _strings(value: object) -> list[str]:
    # A bare string is a sequence of characters to Python: `"depends_on": "plan"` would
    # otherwise depend on 'p', 'l', 'a' and 'n'.
    if isinstance(value, list):
        items = [v for v in value if isinstance(v, str)]
        if len(items) == len(value):
            return items
    raise _BadValue(f"must be a list of strings, got {_show(value)}")


def _string_map(value: object) -> dict[str, str]:
    if isinstance(value, dict):
        items = {str(k): v for k, v in value.items() if isinstance(v, str)}
        if len(items) == len(value):
            return items
    raise _BadValue(f"must be an object of string values, got {_show(value)}")


def _any(value: object) -> object:
    return value


def _one_of(choices: Sequence[str]) -> Check:
    def check(value: object) -> str:
        if value not in choices:
            raise _BadValue(f"must be one of {', '.join(choices)}, got {_show(value)}")
        return str(value)

    return check


_CHECKS: dict[object, Check] = {
    str: _string,
    int: _integer,
    float: _number,
    bool: _boolean,
    Sequence[str]: _strings,
    Mapping[str, str]: _string_map,
    object: _any,  # payload: bytes as they are, str as UTF-8, anything else as JSON
}
"""A check per Task field annotation."""


def _inputs(value: object) -> str | list[str]:
    if value == INPUTS_ALL:
        return INPUTS_ALL
    try:
        return _strings(value)
    except _BadValue:
        raise _BadValue(
            f'must be "{INPUTS_ALL}" or a list of dependency ids, got {_show(value)}'
        ) from None


_FIELD_CHECKS: dict[str, Check] = {
    "cache": _one_of(tuple(_CACHE_POLICIES)),
    "inputs": _inputs,
}
"""Fields whose values are narrower than their annotation."""


def _task_fields() -> tuple[dict[str, Check], frozenset[str]]:
    """Every Task field's check, and the fields without a default (required in a job file)."""
    hints = typing.get_type_hints(Task)
    checks: dict[str, Check] = {}
    required = set()
    for f in dataclasses.fields(Task):
        check = _FIELD_CHECKS.get(f.name) or _CHECKS.get(hints[f.name])
        if check is None:  # a Task field of a new type: add its check to _CHECKS
            raise TypeError(f"jobfile has no check for Task.{f.name}: {hints[f.name]}")
        checks[f.name] = check
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.add(f.name)
    return checks, frozenset(required)


FIELD_CHECKS, REQUIRED = _task_fields()
KEYS = (*FIELD_CHECKS, PAYLOAD_B64)
"""Every key a task object may carry."""


def task_from_json(obj: object, where: str) -> Task:
    """A Task from one decoded task object; ``where`` starts every error message
    (e.g. ``job.jsonl line 2``). Raises :class:`JobFileError`."""
    if not isinstance(obj, dict):
        raise JobFileError(f"{where}: a task must be a JSON object, got {_show(obj)}")
    task_id = obj.get("id")
    if isinstance(task_id, str):
        where = f'{where}: task "{task_id}"'
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise JobFileError(f"{where}: {_unknown_key(unknown[0])}")
    missing = sorted(REQUIRED - set(obj))
    if missing:
        raise JobFileError(f'{where}: "{missing[0]}" is missing; every task needs it')
    values: dict[str, Any] = {}
    for key, value in obj.items():
        if key == PAYLOAD_B64:
            continue
        try:
            values[key] = FIELD_CHECKS[key](value)
        except _BadValue as e:
            raise JobFileError(f'{where}: "{key}" {e}') from None
    if PAYLOAD_B64 in obj:
        if "payload" in obj:
            raise JobFileError(f'{where}: give "payload" or "{PAYLOAD_B64}", not both')
        values["payload"] = _base64(obj[PAYLOAD_B64], where)
    try:
        task = Task(**values)
        task.to_proto()  # what the SDK checks as it encodes (priority range, cache, inputs)
    except ValueError as e:  # a check of Task's own
        raise JobFileError(f"{where}: {e}") from None
    return task


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1)
    if close:
        return f'unknown key "{key}"; did you mean "{close[0]}"?'
    return f'unknown key "{key}"; a task may have {", ".join(KEYS)}'


def _base64(value: object, where: str) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as e:
            raise JobFileError(f'{where}: "{PAYLOAD_B64}" is not base64 ({e})') from None
    raise JobFileError(f'{where}: "{PAYLOAD_B64}" must be a base64 string, got {_show(value)}')


def load_tasks(path: Path) -> list[Task]:
    """The tasks of a job file (see the module docstring). Raises :class:`JobFileError`."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not an error
    except UnicodeDecodeError as e:
        raise JobFileError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise JobFileError(f"{path}: cannot read it ({e.strerror})") from None
    if not text.strip():
        raise JobFileError(f"{path}: the file is empty; put one task object per line")
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        lines = text.split("\n")  # as json counts lines: \u2028 in a string is no break
        first = next(line for line in lines if line.strip())
        if not (first.lstrip().startswith("{") and _parses(first)):
            raise JobFileError(
                f"{path} line {e.lineno}, column {e.colno}: not JSON ({e.msg})"
            ) from None
        tasks = _jsonl(path, lines)  # more than one line of JSON: JSON lines
    else:
        tasks = _document(path, text)
    if not tasks:
        raise JobFileError(f"{path}: no tasks; a job needs at least one")
    return tasks


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _jsonl(path: Path, lines: Sequence[str]) -> list[Task]:
    """One task object per line; blank lines are skipped."""
    tasks = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise JobFileError(f"{path} line {n}, column {e.colno}: not JSON ({e.msg})") from None
        tasks.append(task_from_json(obj, f"{path} line {n}"))
    return tasks


def _document(path: Path, text: str) -> list[Task]:
    """Valid JSON: an array of tasks, an object whose "tasks" key is one, or a single task;
    each task's errors name the line its object starts on."""
    start = _skip_space(text, 0)
    if text[start] == "{":
        items = dict(_object_items(text, start))
        if "tasks" not in items:
            return [task_from_json(json.loads(text), f"{path} line {_line_of(text, start)}")]
        unknown = sorted(set(items) - {"tasks"})
        if unknown:
            raise JobFileError(f'{path}: unknown key "{unknown[0]}"; a job file has "tasks"')
        value, start = items["tasks"]
        if not isinstance(value, list):
            line = _line_of(text, start)
            raise JobFileError(f'{path} line {line}: "tasks" must be a list of task objects')
    elif text[start] != "[":
        raise JobFileError(f"{path}: expected a list of task objects or one per line")
    return [
        task_from_json(obj, f"{path} line {_line_of(text, pos)}")
        for obj, pos in _array_items(text, start)
    ]


# The helpers below walk text that json.loads has already accepted, so they need not check its
# syntax; they only find where each value starts.
_DECODER = json.JSONDecoder()


def _skip_space(text: str, pos: int) -> int:
    while text[pos] in " \t\r\n":
        pos += 1
    return pos


def _array_items(text: str, pos: int) -> list[tuple[object, int]]:
    """The values of the array at ``text[pos]`` with the offset each starts at."""
    items: list[tuple[object, int]] = []
    pos = _skip_space(text, pos + 1)
    while text[pos] != "]":
        value, end = _DECODER.raw_decode(text, pos)
        items.append((value, pos))
        pos = _skip_space(text, end)
        if text[pos] == ",":
            pos = _skip_space(text, pos + 1)
    return items


def _object_items(text: str, pos: int) -> list[tuple[str, tuple[object, int]]]:
    """The members of the object at ``text[pos]``: key, (value, offset the value starts at)."""
    items: list[tuple[str, tuple[object, int]]] = []
    pos = _skip_space(text, pos + 1)
    while text[pos] != "}":
        key, end = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, _skip_space(text, end) + 1)  # past the colon
        value, end = _DECODER.raw_decode(text, pos)
        items.append((str(key), (value, pos)))
        pos = _skip_space(text, end)
        if text[pos] == ",":
            pos = _skip_space(text, pos + 1)
    return items


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
