"""The peer processes of the benchmark harness run end to end on real PostgreSQL.

Each peer (DBOS through its sync API, DBOS through its async API, Procrastinate) goes
through the harness's full measurement (:func:`benchmarks.peers.measure_peer`: setup
process with warm-up, null process, measured process, WAL marks) for a tiny N, with and
without ``--io-url``. The test then reads the peer's own tables itself: every workflow
must be recorded as succeeded, and with ``--io-url`` the local aiohttp server must have
received two GETs per workflow (one per step; warm-up workflows included). Without the
``bench`` extra (as in CI) a peer's result must say it is not installed, and nothing else
runs. No timing is asserted.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web

from dataworkflows.testing import POSTGRES_ENV

# the harness is a folder of the checkout, not an installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import peers, pg
from benchmarks.workloads import Context

pytestmark = pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} not set")

N = 5
WARMUP = 2

SPECS = {
    "dbos-sync": lambda io: peers.dbos_spec("sync", io),
    "dbos-async": lambda io: peers.dbos_spec("async", io),
    "procrastinate": peers.procrastinate_spec,
}

#: the peer's own record of the measured workflows: status -> count
DBOS_STATUSES = (
    "SELECT status, count(*) FROM dbos.workflow_status WHERE workflow_uuid LIKE 'run-%' "
    "GROUP BY status"
)
DBOS_STEPS = "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid LIKE 'run-%'"
PROCRASTINATE_STATUSES = (
    "SELECT status::text, count(*) FROM procrastinate_jobs WHERE args ->> 'tag' = 'run' "
    "GROUP BY status"
)
PROCRASTINATE_SUCCEEDED_EVENTS = (
    "SELECT count(*) FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id"
    " WHERE j.args ->> 'tag' = 'run' AND e.type = 'succeeded'"
)


class CountingServer:
    """A local HTTP server that counts the GETs it answers."""

    def __init__(self) -> None:
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text="ok")


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    counting = CountingServer()
    app = web.Application()
    app.router.add_get("/io", counting.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    counting.url = f"http://127.0.0.1:{port}/io"
    try:
        yield counting
    finally:
        await runner.cleanup()


def _context(tmp_path: Path, tag: str) -> Context:
    url = os.environ[POSTGRES_ENV]
    prefix = f"{pg.admin_database(url)}_peer_{os.getpid()}_{tag}"
    return Context(
        run_id="test",
        work_dir=tmp_path,
        pg_admin_url=url,
        db_prefix=prefix.replace("-", "_")[:50],
        keep_databases=True,
        inflight=4,
        warmup=WARMUP,
        timeout=120,
        log=lambda _message: None,
    )


def _read(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("with_io", [False, True], ids=["echo", "io"])
@pytest.mark.parametrize("peer", list(SPECS))
async def test_each_peer_runs_every_workflow_to_success(
    peer: str, with_io: bool, server: CountingServer, tmp_path: Path
) -> None:
    io_url = server.url if with_io else None
    spec = SPECS[peer](io_url)
    ctx = _context(tmp_path, f"{peer}_{int(with_io)}")
    name = f"{ctx.db_prefix}_{spec.db_suffix}"[:63]
    try:
        result = await peers.measure_peer(ctx, N, spec, io_url)
        if importlib.util.find_spec(spec.package) is None:
            assert result["skipped"] and "not installed" in result["error"]
            assert server.hits == 0
            return
        assert result["ok"], result.get("error")
        assert result["workload"] == spec.workload
        assert result["workload"].endswith("-io") == with_io
        assert result["runs"] == N

        url = pg.database_url(ctx.pg_admin_url or "", name, driver=False)
        if spec.package == "dbos":
            assert dict(_read(url, DBOS_STATUSES)) == {"SUCCESS": N}
            assert _read(url, DBOS_STEPS)[0][0] == 2 * N
        else:
            assert dict(_read(url, PROCRASTINATE_STATUSES)) == {"succeeded": N}
            assert _read(url, PROCRASTINATE_SUCCEEDED_EVENTS)[0][0] == N

        durable = result["durable_commits"]
        assert durable.get("error") or durable["commits"] >= N, durable
        assert server.hits == (2 * (N + WARMUP) if with_io else 0)
    finally:
        pg.drop_database(ctx.pg_admin_url or "", name)


async def test_a_peer_that_is_not_installed_is_reported_not_run(tmp_path: Path) -> None:
    spec = dataclasses.replace(peers.procrastinate_spec(), package="dw_no_such_peer")
    result = await peers.measure_peer(_context(tmp_path, "missing"), N, spec)
    assert result["skipped"] is True
    assert not result["ok"]
    assert "dw_no_such_peer is not installed" in result["error"]
