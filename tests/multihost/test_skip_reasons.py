"""Where network namespaces cannot be made, the multi-host tests skip saying why."""

from __future__ import annotations

import os
import shutil

import pytest

from . import netns


def test_without_root_the_reason_says_root_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns.namespaces_unavailable() == (
        "network namespaces need root (ip netns add); run the suite as root to include them"
    )


def test_without_ip_the_reason_names_iproute2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert netns.namespaces_unavailable() == (
        "no `ip` command (iproute2) to create network namespaces"
    )


def test_a_refused_namespace_is_a_skip_reason_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: str, check: bool = True) -> None:
        raise RuntimeError("ip netns add dfp1-sw failed: mount --make-shared: Permission denied")

    monkeypatch.setattr(netns, "_ip", refuse)
    topology = netns.Topology({"a": 2}, tag="dfp1")
    with pytest.raises(netns.NamespacesUnavailable, match="Permission denied"):
        topology.create()
