"""Reading a task's item list out of its JSON payload and writing one part's payload.

A part's payload is the parent's JSON object with the list replaced by the part's slice and
every other field kept, so the handler runs a part exactly as it would run the whole task.
"""

from __future__ import annotations

import json
from typing import Any

from deerflow_common.errors import TaskError
from deerflow_controller.core.validation import quote
from deerflow_controller.decomposer._model import split_error

__all__ = ["json_type", "parse_items", "part_payload"]


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages a submitter can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_items(
    handler: str, payload: bytes, items_field: str
) -> tuple[dict[str, Any], list[Any]] | TaskError:
    """The decoded payload object and its item list, or a SPLIT_ERROR saying what is wrong with
    the payload and how to fix it. Never raises."""
    fix = f"send a JSON object with a list in {quote(items_field)} or set split=NEVER"
    try:
        doc = json.loads(payload)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return split_error(handler, "splitter", f"payload is not JSON ({exc.msg}: {where})", fix)
    except UnicodeDecodeError as exc:
        problem = f"payload is not JSON text ({exc.encoding} cannot decode it: {exc.reason})"
        return split_error(handler, "splitter", problem, fix)
    except RecursionError:
        return split_error(handler, "splitter", "payload is JSON nested too deeply to parse", fix)
    except ValueError as exc:  # an integer longer than Python's int conversion limit
        return split_error(handler, "splitter", f"payload cannot be decoded ({exc})", fix)
    if not isinstance(doc, dict):
        return split_error(
            handler, "splitter", f"payload is a JSON {json_type(doc)}, not an object", fix
        )
    if items_field not in doc:
        # The handler's single-item form (crawl's {"url": ...}): nothing to split, run it whole.
        return doc, []
    items = doc[items_field]
    if not isinstance(items, list):
        problem = f"payload field {quote(items_field)} is a JSON {json_type(items)}, not an array"
        return split_error(handler, "splitter", problem, fix)
    return doc, items


def part_payload(doc: dict[str, Any], items_field: str, chunk: list[Any]) -> bytes:
    """``doc`` with its list replaced by ``chunk``: compact JSON, key order kept, non-ASCII text
    kept as UTF-8 (smaller than escapes, and what the submitter sent)."""
    out = dict(doc)
    out[items_field] = chunk
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
