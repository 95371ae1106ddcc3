"""Reading handler payloads: UTF-8 JSON objects whose fields are checked one by one.

Every failure is a :class:`FatalError` naming the handler and the field: no retry fixes a bad
payload.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._errors import FatalError

__all__ = ["integer", "number", "parse_object", "string"]


def parse_object(name: str, payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FatalError(f"{name}: payload is not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FatalError(f"{name}: payload must be a JSON object, got {type(doc).__name__}")
    return doc


def number(name: str, doc: dict[str, Any], key: str, default: float | None = None) -> float:
    value = doc.get(key, default)
    if value is None:
        raise FatalError(f"{name}: payload field {key!r} is required (a number)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FatalError(f"{name}: payload field {key!r} must be a finite number, got {value!r}")
    if value < 0:
        raise FatalError(f"{name}: payload field {key!r} must be >= 0, got {value!r}")
    return float(value)


def integer(name: str, doc: dict[str, Any], key: str, default: int | None = None) -> int:
    value = doc.get(key, default)
    if value is None:
        raise FatalError(f"{name}: payload field {key!r} is required (an integer)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise FatalError(f"{name}: payload field {key!r} must be an integer, got {value!r}")
    return value


def string(name: str, doc: dict[str, Any], key: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if value is None:
        raise FatalError(f"{name}: payload field {key!r} is required (a string)")
    if not isinstance(value, str):
        raise FatalError(f"{name}: payload field {key!r} must be a string, got {value!r}")
    return value
