"""Which TCP endpoints gRPC uses in our processes: its classic ones, chosen through
``GRPC_EXPERIMENTS`` before grpc is imported.

grpcio 1.85 runs every TCP connection through its EventEngine endpoints (the experiments
``event_engine_client``, ``event_engine_listener`` and ``event_engine_for_all_other_endpoints``,
on by default). With grpc.aio on uvloop, the classic endpoints cost less per message and answer
sooner. Measured on the 2-core VM (Python 3.11, two processes on loopback, 3,000 calls after 200
of warm-up, ``docs/BENCHMARKS.md``): a message and its echo on an open bidirectional stream
p50 240 -> 140 us with 147 -> 93 us of the server's CPU and 157 -> 97 us of the client's; a
unary call 500 -> 370-400 us. That is every agent stream's message, and the one-task job's
round trip.

grpc reads the variable once, when it is imported, so the daemons' and the ``deerflow`` command's
entry modules call :func:`use_classic_endpoints` before importing anything that imports grpc; the
processes they start inherit it. A value already in the environment wins (``GRPC_EXPERIMENTS=``,
empty, keeps gRPC's own defaults). The SDK does not touch a caller's environment: a program that
wants the same sets the variable before it imports grpc (``docs/CONFIGURATION.md``).
"""

from __future__ import annotations

import os
import sys

__all__ = ["CLASSIC_ENDPOINTS", "ENV", "use_classic_endpoints"]

ENV = "GRPC_EXPERIMENTS"
CLASSIC_ENDPOINTS = (
    "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
)
"""gRPC experiments turned off: its EventEngine endpoints for client connections, listeners and
every other connection. grpc names an experiment it does not know on stderr ("Unknown
experiment"); a test holds these to the locked grpcio."""


def use_classic_endpoints() -> bool:
    """Ask gRPC for its classic endpoints in this process and the ones it starts; return whether
    that took effect: False when the environment already names experiments (the operator's
    choice) or grpc is imported already (too late for this process; nothing is changed)."""
    if ENV in os.environ or "grpc" in sys.modules:
        return False
    os.environ[ENV] = CLASSIC_ENDPOINTS
    return True
