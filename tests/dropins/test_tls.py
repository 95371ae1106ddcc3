"""The drop-ins' shared connection talks TLS (and mutual TLS) when DeerFlow's environment names
the files, as the CLI reads them; a bad file is refused naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from deerflow_bench import Cluster
from deerflow_common.tls import CertificateDir, make_certificates
from deerflow_controller.client import Task
from deerflow_dropins._cluster import ClusterConnection, ClusterSettings


async def test_a_drop_in_runs_a_task_on_a_mutual_tls_cluster_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_certificates(tmp_path)
    certs = CertificateDir(tmp_path)
    client = certs.client()
    monkeypatch.setenv("DEERFLOW_TLS_CA", str(client.ca))
    monkeypatch.setenv("DEERFLOW_TLS_CERT", str(client.cert))
    monkeypatch.setenv("DEERFLOW_TLS_KEY", str(client.key))
    async with Cluster(1, tls=certs, mutual_tls=True, agent_args=["--slots", "2"]) as cluster:
        conn = ClusterConnection(cluster.address, settings=ClusterSettings())
        try:
            result = await conn.arun_task(Task("t", "echo", {"x": 1}), timeout_s=60)
        finally:
            conn.close()
    assert result.ok and result.output == b'{"x":1}'


def test_a_drop_in_given_a_missing_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEERFLOW_TLS_CA", str(tmp_path / "none.pem"))
    with pytest.raises(ValueError, match=r"^DEERFLOW_TLS_CA .*none\.pem: no such file$"):
        ClusterConnection("127.0.0.1:1", settings=ClusterSettings())
