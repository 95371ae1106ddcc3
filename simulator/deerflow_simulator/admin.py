"""Operator endpoints: counters, and the knobs a scenario turns while it runs.

    GET  /stats           {"keys": {KEY: counters}, "uptime_s", "brownout"}
    POST /admin/reset     {"limiters": false}: zero the counters (and refill the buckets)
    POST /admin/brownout  {"error_rate": 0.3, "duration_s": 60}: fail that share for a while
    POST /admin/limits    {"key": K, "rpm": 500, ...}: change (or add) a key's limits

No authentication: the simulator binds loopback by default. Errors are 400 with
``{"error": {"message": ...}}``.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from aiohttp import web

from .config import KeyLimits
from .endpoints import BadRequest, read_json
from .state import ProviderState

__all__ = ["AdminEndpoints"]


def _error(message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=400)


async def _optional_body(request: web.Request) -> dict[str, Any]:
    if not (await request.read()).strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


class AdminEndpoints:
    def __init__(self, state: ProviderState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/stats", self.stats),
            web.post("/admin/reset", self.reset),
            web.post("/admin/brownout", self.brownout),
            web.post("/admin/limits", self.limits),
        ]

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats_json())

    async def reset(self, request: web.Request) -> web.Response:
        """Zero the counters; ``{"limiters": true}`` also refills every key's buckets."""
        try:
            body = await _optional_body(request)
        except BadRequest as e:
            return _error(e.message)
        limiters = body.get("limiters", False)
        if not isinstance(limiters, bool):
            return _error("'limiters' must be true or false.")
        self.state.reset(limiters=limiters)
        return web.json_response({"reset": True, "limiters": limiters})

    async def brownout(self, request: web.Request) -> web.Response:
        """Answer 500/502/503 to ``error_rate`` of the requests for ``duration_s`` seconds."""
        try:
            body = await _optional_body(request)
        except BadRequest as e:
            return _error(e.message)
        rate, duration = body.get("error_rate"), body.get("duration_s", 60.0)
        if not _is_number(rate) or not 0 <= rate <= 1:
            return _error("'error_rate' is required, a number from 0 to 1.")
        if not _is_number(duration) or duration <= 0:
            return _error("'duration_s' must be a number of seconds > 0.")
        self.state.start_brownout(float(rate), float(duration))
        return web.json_response({"brownout": self.state.brownout()})

    async def limits(self, request: web.Request) -> web.Response:
        """Change a key's limits: fields left out keep their value, null turns a limit off. An
        unknown key is added with those limits. Buckets keep their level."""
        try:
            body = await _optional_body(request)
        except BadRequest as e:
            return _error(e.message)
        key = body.pop("key", None)
        if not isinstance(key, str) or not key:
            return _error("'key' is required: the API key whose limits change.")
        current = self.state.limits_of(key) or KeyLimits()
        try:
            limits = KeyLimits.from_dict({**current.to_dict(), **body}, where="limits")
        except ValueError as e:
            return _error(str(e))
        self.state.set_limits(key, limits)
        return web.json_response({"key": key, "limits": limits.to_dict()})


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
