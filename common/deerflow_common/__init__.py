"""Code shared by the controller, the agent and the client SDK: channel options, logging and
the event-loop runner here; the vocabularies both sides speak in public modules of their own
(``errors``, ``signals``, ``provider_codes``), and ``backoff``, ``plugins`` and ``etcd``. Kept
small on purpose; anything specific to one daemon lives there."""

from .channel import channel_options, server_options
from .logs import setup_logging
from .runner import run

__all__ = ["channel_options", "run", "server_options", "setup_logging"]
