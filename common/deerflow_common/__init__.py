"""Code shared by the controller, the agent and the client SDK: channel options, logging and
the event-loop runner. Kept small on purpose; anything specific to one daemon lives there."""

from .channel import channel_options, server_options
from .logs import setup_logging
from .runner import run

__all__ = ["channel_options", "run", "server_options", "setup_logging"]
