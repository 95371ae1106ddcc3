"""How a call or stream of the asyncio client paces its tries through a failover."""

from __future__ import annotations

import enum

from deerflow_common.backoff import CENTRED_JITTER, Backoff

RETRY_FIRST_S = 0.05
RETRY_CAP_S = 0.25
"""Pauses (seconds, before jitter of x0.5-1.5) between tries while no controller serves: they
double from the first to the cap. The cap is short because a failover ends the moment the new
leader opens its gate (about 3 s after the old one died): a client sleeping out a longer pause
then would add it to the failover it feels. A refusal costs a controller next to nothing."""


class Retry:
    """One call's (or stream's) way through a failover: how long to pause before the next try.

    A try that follows a controller's pointer to the leader goes at once; a second one in a row
    pauses like any other, so two controllers that name each other (a standby naming a leader
    that just died) are polled, not hammered."""

    def __init__(self) -> None:
        self._backoff = Backoff(RETRY_FIRST_S, RETRY_CAP_S, jitter=CENTRED_JITTER)
        self._followed = False

    def reset(self) -> None:
        """The call got through: the next failover starts with short pauses again."""
        self._backoff.reset()
        self._followed = False

    def pause_s(self, *, followed_pointer: bool) -> float:
        """Seconds to wait before the next try."""
        if followed_pointer and not self._followed:
            self._followed = True
            return 0.0
        self._followed = False
        return self._backoff.delay()


class Moved(enum.Enum):
    """What ``AsyncClient._move`` did after a refusal or a broken connection."""

    POINTER = "followed the refusal's pointer to the leader"
    STAYED = "stayed: the controller named itself the leader (it is restoring)"
    NEXT = "moved to the next configured address"
    NOWHERE = "one address and no pointer: nowhere else to go"
