"""What the agent masks in failed attempts' messages and handlers' log lines (issue #17, item 5):
the secret-looking values of a payload, wherever they sit, and credentials in URLs."""

from __future__ import annotations

import json

from deerflow_agent._redact import display_url, payload_secrets, redact


def test_secret_fields_are_found_at_any_depth_and_a_bearer_credential_on_its_own() -> None:
    payload = json.dumps(
        {
            "model": "m",
            "api_key": "sk-top-level-1",
            "request": {"headers": {"Authorization": "Bearer tok-nested-2", "X-Api-Key": "k-3333"}},
            "steps": [{"password": "pw-in-a-list-4"}],
            "token": "ab",  # too short to mask without masking ordinary words
        }
    ).encode()

    found = set(payload_secrets(payload))

    assert found == {
        "sk-top-level-1",
        "Bearer tok-nested-2",
        "tok-nested-2",
        "k-3333",
        "pw-in-a-list-4",
    }
    text = f"failed on {json.loads(payload)} with tok-nested-2"
    masked = redact(text, payload_secrets(payload))
    assert not any(s in masked for s in found) and "***" in masked


def test_a_payload_without_secret_fields_or_not_json_yields_nothing() -> None:
    assert payload_secrets(b'{"url": "https://example.com/", "seconds": 1}') == ()
    assert payload_secrets(b"api_key=not json") == ()
    deep = b'{"api_key": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert payload_secrets(deep) == ()  # too deep to parse: never raises


def test_a_url_is_shown_without_its_user_info_and_query_values() -> None:
    shown = display_url("https://bob:pw-123@api.example.com/v1/x?key=AIzaSECRET&q=1#frag")

    assert shown == "https://api.example.com/v1/x?key=***&q=***"
