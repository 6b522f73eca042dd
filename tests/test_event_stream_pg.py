"""The live event stream across transactions and processes (PostgreSQL only).

On PostgreSQL an event's ``bigserial`` id is taken before its transaction commits, so
transactions commit out of id order; the stream's cursor is commit-ordered instead
(``dataworkflows.db.commit_order``). These tests make two transactions commit out of id
order and show that no event is lost, and that an API process sees every event of a run
executed by a separate ``dataworkflows worker`` process, in order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dataworkflows.db.models import execution_events
from dataworkflows.ledger.event_feed import FeedCursor, FeedFilter
from dataworkflows.testing import postgres_only
from dataworkflows.testing.sse import open_stream


def _event(execution_id: uuid.UUID, sequence: int) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "sequence": sequence,
        "type": "StepSucceeded",
        "node_id": f"n{sequence}",
        "payload": {"attempt": 1},
        "created_at": datetime.now(UTC),
    }


async def _queued_run(kernel: Any, workflow_id: str) -> uuid.UUID:
    await kernel.service.apply(
        {
            "id": workflow_id,
            "displayName": workflow_id,
            "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": "a"}}],
        }
    )
    summary, _ = await kernel.service.execute(workflow_id, trigger={})
    return uuid.UUID(summary["executionId"])


@postgres_only
async def test_no_event_is_lost_when_transactions_commit_out_of_id_order(
    kernel_factory, api_factory
):
    kernel = await kernel_factory()
    api = await api_factory(kernel, run_worker=False)
    run_x = await _queued_run(kernel, "pg-order-x")
    run_y = await _queued_run(kernel, "pg-order-y")
    feed = kernel.events.feed
    where = FeedFilter("default")
    # the stream resumes after both RunQueued events
    async with kernel.db.connect() as conn:
        t = execution_events
        queued = (
            await conn.execute(
                select(t.c.commit_xid, t.c.id).where(t.c.execution_id.in_([run_x, run_y]))
            )
        ).all()
    head = FeedCursor(*max(queued))
    response, reader = await open_stream(api, headers={"Last-Event-ID": head.token})

    engine = kernel.db.engine
    async with engine.connect() as t1, engine.connect() as t2:
        await t1.begin()
        await t2.begin()
        # T1 takes the lower id, T2 the higher one; T2 commits first
        x_id = (
            await t1.execute(
                execution_events.insert().returning(execution_events.c.id), _event(run_x, 2)
            )
        ).scalar_one()
        y_id = (
            await t2.execute(
                execution_events.insert().returning(execution_events.c.id), _event(run_y, 2)
            )
        ).scalar_one()
        assert x_id < y_id
        await t2.commit()

        # a naive ``id > last`` reader sees Y now, and would then ask for ids after it
        async with kernel.db.connect() as conn:
            naive = (
                await conn.execute(
                    select(execution_events.c.id).where(execution_events.c.id > x_id - 1)
                )
            ).scalars()
            assert list(naive) == [y_id]  # X is not committed: it would be lost
        # the stream's feed holds Y back while T1 (older) is still open
        page = await feed.read(head, where)
        assert page.events == [] and page.held_back

        await t1.commit()

    frames = [await reader.event(), await reader.event()]
    response.close()
    assert [(f.data["executionId"], f.data["sequence"]) for f in frames] == [
        (str(run_x), 2),
        (str(run_y), 2),
    ]
    # resuming after the first one gives exactly the second
    response, reader = await open_stream(api, headers={"Last-Event-ID": frames[0].id})
    resumed = await reader.event()
    response.close()
    assert (resumed.id, resumed.data["executionId"]) == (frames[1].id, str(run_y))
    page = await feed.read(head, where)
    assert [row["id"] for _, row in page.events] == [x_id, y_id]


@postgres_only
async def test_a_long_transaction_in_another_database_does_not_hold_the_stream_back(
    kernel_factory, database_url
):
    """No shared fate across databases: a bulk load elsewhere on the server (a
    transaction with an id, open for as long as it likes) must not stall this database's
    live events; one open in this database still does (it may commit events below)."""
    import psycopg
    from sqlalchemy.engine import make_url

    from dataworkflows.db.database import libpq_url

    kernel = await kernel_factory()
    feed = kernel.events.feed
    where = FeedFilter("default")
    head = await feed.head()
    other = libpq_url(make_url(database_url).set(database="postgres").render_as_string(False))
    with psycopg.connect(other) as elsewhere:
        elsewhere.execute("SELECT pg_current_xact_id()")  # an id, held until the end
        run = await _queued_run(kernel, "pg-elsewhere")
        page = await feed.read(head, where)
        assert not page.held_back
        assert [row["execution_id"] for _, row in page.events] == [run]

        async with kernel.db.engine.connect() as here:
            await here.begin()
            await here.execute(select(execution_events.c.id).limit(1).with_for_update())
            await here.exec_driver_sql("SELECT pg_current_xact_id()")
            later = await _queued_run(kernel, "pg-here")
            page = await feed.read(page.events[-1][0], where)
            assert page.events == [] and page.held_back, "an open writer here holds back"
            await here.rollback()
        page = await feed.read(page.events[-1][0] if page.events else head, where)
        assert later in [row["execution_id"] for _, row in page.events]
        elsewhere.rollback()


SUPPORT = Path(__file__).parent / "support"


@pytest.fixture
def worker_process(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """``start()``: a ``dataworkflows worker`` process on this test's database."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DATAWORKFLOWS_DATABASE_URL": database_url,
            "DATAWORKFLOWS_POLL_INTERVAL": "0.5",
            # every attempt gets its durable StepStarted: what other processes see
            "DATAWORKFLOWS_STEP_STARTED_AFTER_SECONDS": "0",
            "DATAWORKFLOWS_LOAD_PLUGINS": "dataworkflows-echo",
        }
        log = open(tmp_path / "worker.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataworkflows.cli.main", "worker", "--concurrency", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@postgres_only
async def test_an_api_process_streams_every_event_of_a_run_run_by_another_process(
    kernel_factory, api_factory, worker_process
):
    kernel = await kernel_factory()
    api = await api_factory(kernel, run_worker=False)  # process A: API only (--no-worker)
    await kernel.service.apply(
        {
            "id": "pg-remote",
            "displayName": "remote",
            "nodes": [
                {"id": n, "actionType": "core.echo", "parameters": {"message": n}} for n in "abc"
            ],
        }
    )
    # NOTIFY must wake the stream: the poll fallback would take an hour
    kernel.events.poll_interval = 3600.0
    response, reader = await open_stream(api, workflowId="pg-remote")
    await kernel.events.listening.wait()
    resp = await api.post("/api/v1/workflows/pg-remote/execute", json={})
    run_id = (await resp.json())["executionId"]
    worker = worker_process()  # process B
    first = [await reader.event(timeout=60) for _ in range(3)]
    response.close()  # disconnect mid-run, resume from the last id received
    response, reader = await open_stream(
        api, headers={"Last-Event-ID": first[-1].id}, workflowId="pg-remote"
    )
    frames = first + await reader.events_until("RunSucceeded", timeout=60)
    response.close()
    assert worker.poll() is None

    async with kernel.db.connect() as conn:
        stored = [
            (r.sequence, r.type)
            for r in await conn.execute(
                select(execution_events.c.sequence, execution_events.c.type)
                .where(execution_events.c.execution_id == uuid.UUID(run_id))
                .order_by(execution_events.c.sequence)
            )
        ]
    assert [(f.data["sequence"], f.event) for f in frames] == stored
    # every event recorded its transaction (group commit included): the stream's cursor
    assert all(int(f.id.split("-")[0]) > 0 for f in frames)
    assert all(f.data["durable"] and f.data["executionId"] == run_id for f in frames)
    # the other process's steps show as started (its durable StepStarted events)
    started = [f.data["nodeId"] for f in frames if f.event == "StepStarted"]
    assert started == ["a", "b", "c"]


@postgres_only
async def test_writers_notify_only_while_some_process_streams(kernel_factory, api_factory):
    import psycopg

    from dataworkflows.db.database import libpq_url
    from dataworkflows.ledger.records import EVENTS_CHANNEL

    kernel = await kernel_factory()
    api = await api_factory(kernel, run_worker=False)
    listener = await psycopg.AsyncConnection.connect(libpq_url(kernel.db.url), autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {EVENTS_CHANNEL}")

        async def next_payload() -> str:
            async for note in listener.notifies(timeout=20, stop_after=1):
                return str(note.payload)
            raise AssertionError("no notification within 20 s")

        async def marker(text: str) -> None:
            async with kernel.db.begin() as conn:
                await kernel.db.notify(conn, EVENTS_CHANNEL, text)

        # no stream anywhere: writing events sends no NOTIFY (the marker comes first)
        await _queued_run(kernel, "pg-quiet")
        await marker("after-quiet-write")
        assert await next_payload() == "after-quiet-write"

        # a stream is open in some process: every transaction that writes events NOTIFYs
        response, _reader = await open_stream(api)
        await _queued_run(kernel, "pg-loud")
        assert await next_payload() == ""
        response.close()

        # after the last stream: the announcement is withdrawn (renewal ticks elided)
        await kernel.events.close()
        await kernel.service.execute("pg-quiet", trigger={"again": True})
        await marker("after-close")
        assert await next_payload() == "after-close"
