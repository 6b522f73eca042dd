"""The benchmark harness measures the CPU of a PostgreSQL server's backends on any cluster.

The database figures come from the processes of the server a URL reaches (the parent of
``pg_backend_pid()`` and its children), so they must be right both on the configured test
server (Debian's clusters have a ``cluster_name``, ``15/main``) and on a stock ``initdb``
cluster without one (the ``stock_postgres`` fixture of ``tests/conftest.py``). No timing is
asserted: a query that does work must show up as CPU, that is all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from dataworkflows.testing import POSTGRES_ENV

# the harness is a folder of the checkout, not an installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import pg
from benchmarks.common import free_port
from benchmarks.procstats import PostgresMeter, PostgresServer

WORK = "SELECT count(*) FROM generate_series(1, 2000000)"


def _measure(url: str) -> dict[str, Any]:
    with pg.connect(url) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        meter = PostgresMeter(database, url)
        meter.start()
        try:
            conn.execute(WORK)
        finally:
            figures = meter.stop()
    return figures


def test_a_stock_cluster_without_cluster_name_is_measured(stock_postgres: str) -> None:
    with pg.connect(stock_postgres) as conn:
        assert conn.execute("SHOW cluster_name").fetchone() == ("",)
    server = PostgresServer.locate(stock_postgres)
    assert server.prefix == "postgres: "
    figures = _measure(stock_postgres)
    assert "error" not in figures
    assert figures["backends_seen"] >= 1
    assert figures["cpu_s"] > 0
    assert figures["background_cpu_s"] >= 0


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} not set")
def test_the_configured_server_is_measured() -> None:
    url = os.environ[POSTGRES_ENV]
    with pg.connect(url) as conn:
        cluster = conn.execute("SHOW cluster_name").fetchone()[0]  # type: ignore[index]
    server = PostgresServer.locate(url)
    assert server.prefix == (f"postgres: {cluster}: " if cluster else "postgres: ")
    figures = _measure(url)
    assert figures["backends_seen"] >= 1
    assert figures["cpu_s"] > 0


def test_an_unreachable_server_is_reported_not_counted_as_zero() -> None:
    meter = PostgresMeter("nothing", f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    meter.start()
    figures = meter.stop()
    assert figures["cpu_s"] is None
    assert figures["backends_seen"] == 0
    assert "OperationalError" in figures["error"]


def test_a_process_working_in_threads_is_measured() -> None:
    """The CPU of every thread counts, of those still running and of those that ended (a
    peer driven through threads read as idle when only the main thread was read)."""
    import threading
    import time

    from benchmarks.procstats import ProcessMeter

    spun = threading.Event()
    release = threading.Event()

    def spin(then_wait: bool) -> None:
        started = time.thread_time()
        while time.thread_time() - started < 0.25:
            pass
        if then_wait:
            spun.set()
            release.wait(30)

    meter = ProcessMeter([os.getpid()])
    meter.start()
    alive = threading.Thread(target=spin, args=(True,))
    ended = threading.Thread(target=spin, args=(False,))
    alive.start()
    ended.start()
    ended.join()
    assert spun.wait(30)
    try:
        figures = meter.stop()
    finally:
        release.set()
        alive.join()
    # the main thread only waited: 0.5 s of CPU is the two threads'
    assert figures["cpu_s"] >= 0.45
