"""``--job-retention-s``: how long a finished job stays readable. A controller told 1 s forgets a
finished job (its reads become NOT_FOUND, saying why) while one started with the default keeps
it; a real controller and agent."""

from __future__ import annotations

import asyncio

import pytest

from deerflow_controller.client import NotFoundError, Task

from .conftest import ClusterFactory, connect


async def test_a_finished_job_is_forgotten_after_the_retention_given_by_flag(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, controller_args=("--job-retention-s", "1")) as short:
        client = await connect(short)
        try:
            job = await client.submit([Task("t", "echo", {"x": 1})])
            assert (await job.wait(timeout_s=30))["t"].ok
            await client.get_job(job.job_id)  # held now
            # Polled until gone (a watch of a finished job ends when its events are delivered,
            # not when the job is forgotten): bounded well past the 1 s retention.
            for _ in range(300):
                try:
                    await client.get_job(job.job_id)
                except NotFoundError as gone:
                    assert "forgotten" in str(gone)
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the job was still held 30 s after a retention of 1 s")
        finally:
            await client.close()


def test_the_retention_flag_refuses_what_is_not_a_finite_number_of_seconds() -> None:
    from click.testing import CliRunner

    from deerflow_controller.main import main

    for bad in ("nan", "inf", "0", "-5"):
        result = CliRunner().invoke(main, ["--job-retention-s", bad])
        assert result.exit_code == 2 and "--job-retention-s" in result.output, bad
