"""How the agent logs a controller refusing its stream: a WARNING when a refusal is new (another
controller, status or sentence, or the first after a welcome), then DEBUG while the same refusal
repeats, with a WARNING reminder at most once per ``quiet_s`` saying how many came since.

An agent whose join token was revoked, or that dials a controller refusing it for any lasting
reason, retries with backoff for as long as it runs (the operator may fix the controller's side
at any time); before this it wrote one WARNING per attempt, every few seconds, for ever."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("deerflow_agent._session")

QUIET_S = 60.0
"""Seconds between two WARNINGs of the same refusal."""


class RefusalLog:
    """See the module docstring. ``clock``: monotonic seconds (a fake one in tests)."""

    def __init__(self, quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic):
        self.quiet_s = quiet_s
        self.clock = clock
        self._last: tuple[str, str, str] | None = None
        self._warned_at = 0.0
        self._repeats = 0

    def refused(self, agent_id: str, address: str, code: str, details: str) -> None:
        """Log one refusal of ``agent_id``'s stream by the controller at ``address``."""
        key = (address, code, details)
        now = self.clock()
        if key != self._last:
            self._last, self._warned_at, self._repeats = key, now, 0
            log.warning(
                "controller %s did not welcome agent %s: %s: %s", address, agent_id, code, details
            )
            return
        self._repeats += 1
        if now - self._warned_at >= self.quiet_s:
            log.warning(
                "controller %s still refuses agent %s (%d more times in the last %.0f s): %s: "
                "%s; retrying with backoff",
                address,
                agent_id,
                self._repeats,
                now - self._warned_at,
                code,
                details,
            )
            self._warned_at, self._repeats = now, 0
        else:
            log.debug("controller %s refused agent %s again: %s", address, agent_id, code)

    def welcomed(self) -> None:
        """A controller welcomed the agent: the next refusal is new."""
        self._last = None
