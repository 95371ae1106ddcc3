"""gRPC channel and server options, each explained where it is set."""

from __future__ import annotations

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options for long-lived client channels (agents' streams, SDK clients)."""
    return [
        # Jobs of many tasks travel as one SubmitJob message; results in batches.
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Ping an idle stream every 10 s and give up after 5 s without an answer, so a dead
        # peer (a SIGKILLed controller, a cut cable) is noticed in seconds, not at TCP's hours.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        # Agents' streams are idle between bursts: keep pinging without outstanding calls.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after a controller restart; the SDK and agent add their own backoff.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options for the controller's server; they must accept what clients are allowed to send."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Accept the clients' keepalive pings (every 10 s, even without calls) instead of
        # answering them with GOAWAY "too_many_pings".
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        # A restarted controller must be able to bind the port its predecessor used at once.
        ("grpc.so_reuseport", 0),
    ]
