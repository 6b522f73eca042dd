"""``GET /api/v1/events/stream``: run events as Server-Sent Events (both backends)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from dataworkflows.db.models import execution_events
from dataworkflows.testing.sse import STREAM, open_stream


def echoes(workflow_id: str, nodes: str = "ab") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [
            {"id": n, "actionType": "core.echo", "parameters": {"message": n}} for n in nodes
        ],
    }


async def execute(api: Any, workflow_id: str, *, tenant: str = "default", corr: str = "") -> str:
    headers = {"X-Tenant-Id": tenant}
    if corr:
        headers["Correlation-Id"] = corr
    resp = await api.post(f"/api/v1/workflows/{workflow_id}/execute", json={}, headers=headers)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["executionId"])


async def stored(kernel: Any, execution_id: str) -> list[tuple[int, str]]:
    t = execution_events
    async with kernel.db.connect() as conn:
        rows = await conn.execute(
            select(t.c.sequence, t.c.type)
            .where(t.c.execution_id == uuid.UUID(execution_id))
            .order_by(t.c.sequence)
        )
        return [(r.sequence, r.type) for r in rows]


async def test_a_runs_events_arrive_in_order_with_live_step_starts(kernel_factory, api_factory):
    kernel = await kernel_factory()
    api = await api_factory(kernel)
    await kernel.service.apply(echoes("sse-order"))
    response, reader = await open_stream(api, workflowId="sse-order")
    run_id = await execute(api, "sse-order", corr="corr-order-1")
    frames = await reader.events_until("RunSucceeded")
    response.close()

    durable = [f for f in frames if f.data["durable"]]
    assert [(f.data["sequence"], f.event) for f in durable] == await stored(kernel, run_id)
    assert [f.data["sequence"] for f in durable] == list(range(1, len(durable) + 1))
    for frame in frames:
        assert frame.event == frame.data["type"]
        assert frame.data["executionId"] == run_id
        assert frame.data["workflowId"] == "sse-order"
        assert frame.data["correlationId"] == "corr-order-1"
        assert set(frame.data) == {
            "executionId",
            "workflowId",
            "sequence",
            "type",
            "nodeId",
            "payload",
            "createdAt",
            "durable",
            "correlationId",
        }
    # durable events carry their cursor as the SSE id, increasing; live ones carry none
    ids = [f.id for f in durable]
    assert all(ids) and len(set(ids)) == len(ids)
    assert all(f.id is None for f in frames if not f.data["durable"])
    # the embedded worker's live StepStarted of each node comes right after the durable
    # event it follows (its sequence), before that node's own end
    live = [f for f in frames if not f.data["durable"]]
    assert sorted(f.data["nodeId"] for f in live) == ["a", "b"]
    for frame in live:
        position = frames.index(frame)
        before = [f for f in frames[:position] if f.data["durable"]]
        assert before[-1].data["sequence"] == frame.data["sequence"]
        ends = [
            f
            for f in frames
            if f.event == "StepSucceeded" and f.data["nodeId"] == frame.data["nodeId"]
        ]
        assert frames.index(ends[0]) > position
        assert frame.event == "StepStarted" and frame.data["payload"]["attempt"] == 1


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(kernel_factory, api_factory):
    kernel = await kernel_factory()
    api = await api_factory(kernel)
    await kernel.service.apply(echoes("sse-resume", "abc"))
    response, reader = await open_stream(api, workflowId="sse-resume")
    first = await execute(api, "sse-resume")
    received = [await reader.event() for _ in range(4)]
    response.close()
    last_id = [f for f in received if f.data["durable"]][-1].id
    # committed while no stream was open: the resumed stream gets them
    assert await kernel.ledger.wait_until_final(uuid.UUID(first)) == "Succeeded"
    second = await execute(api, "sse-resume")
    response, reader = await open_stream(
        api, headers={"Last-Event-ID": last_id}, workflowId="sse-resume"
    )
    received += await reader.events_until("RunSucceeded", count=2)
    response.close()

    durable = [(f.data["executionId"], f.data["sequence"]) for f in received if f.data["durable"]]
    expected = [(first, s) for s, _ in await stored(kernel, first)]
    expected += [(second, s) for s, _ in await stored(kernel, second)]
    assert durable == expected  # no gap, no duplicate, in commit order

    # ?after= is the same as Last-Event-ID; after=0 is the whole history
    response, reader = await open_stream(api, workflowId="sse-resume", after="0")
    everything = await reader.events_until("RunSucceeded", count=2)
    response.close()
    assert [(f.data["executionId"], f.data["sequence"]) for f in everything] == expected
    cut = everything[len(expected) // 2]
    response, reader = await open_stream(api, workflowId="sse-resume", after=cut.id)
    rest = await reader.events_until(
        "RunSucceeded", count=2 if cut.data["executionId"] == first else 1
    )
    response.close()
    keys = [(f.data["executionId"], f.data["sequence"]) for f in rest]
    assert keys == expected[len(expected) // 2 + 1 :]


async def test_an_execution_filter_streams_its_whole_history_then_new_events(
    kernel_factory, api_factory
):
    kernel = await kernel_factory()
    api = await api_factory(kernel)
    await kernel.service.apply(echoes("sse-history"))
    await kernel.service.apply(echoes("sse-history-other"))
    run_id = await execute(api, "sse-history")
    other = await execute(api, "sse-history-other")
    assert await kernel.ledger.wait_until_final(uuid.UUID(run_id)) == "Succeeded"
    assert await kernel.ledger.wait_until_final(uuid.UUID(other)) == "Succeeded"
    response, reader = await open_stream(api, executionId=run_id)
    frames = await reader.events_until("RunSucceeded")
    response.close()
    assert [(f.data["sequence"], f.event) for f in frames] == await stored(kernel, run_id)


async def test_keep_alive_comments_arrive_on_an_idle_stream(kernel_factory, api_factory):
    kernel = await kernel_factory(sse_ping_seconds=0.05)
    api = await api_factory(kernel, run_worker=False)
    response, reader = await open_stream(api)
    pings = [await reader.frame(timeout=10) for _ in range(3)]
    assert [p.comment for p in pings] == ["ping"] * 3
    assert response.headers["Cache-Control"] == "no-cache"
    response.close()


async def test_a_stream_shows_only_its_tenants_runs(kernel_factory, api_factory):
    kernel = await kernel_factory()
    api = await api_factory(kernel)
    await kernel.service.apply(echoes("sse-acme"), tenant_id="acme")
    await kernel.service.apply(echoes("sse-globex"), tenant_id="globex")
    acme_response, acme = await open_stream(api, headers={"X-Tenant-Id": "acme"})
    globex_response, globex = await open_stream(api, headers={"X-Tenant-Id": "globex"})
    acme_run = await execute(api, "sse-acme", tenant="acme", corr="shared-corr")
    globex_run = await execute(api, "sse-globex", tenant="globex", corr="shared-corr")
    acme_frames = await acme.events_until("RunSucceeded")
    globex_frames = await globex.events_until("RunSucceeded")
    assert {f.data["executionId"] for f in acme_frames} == {acme_run}
    assert {f.data["executionId"] for f in globex_frames} == {globex_run}
    acme_response.close()
    globex_response.close()
    # the same correlation id, another tenant: still only the caller's own runs
    response, reader = await open_stream(
        api, headers={"X-Tenant-Id": "globex"}, correlationId="shared-corr", after="0"
    )
    frames = await reader.events_until("RunSucceeded")
    assert {f.data["executionId"] for f in frames} == {globex_run}
    response.close()
    # another tenant's run is not found, like a missing one
    resp = await api.get(
        STREAM, params={"executionId": acme_run}, headers={"X-Tenant-Id": "globex"}
    )
    assert resp.status == 404
    assert (await resp.json())["code"] == "execution_not_found"


async def test_filters_combine(kernel_factory, api_factory):
    kernel = await kernel_factory()
    api = await api_factory(kernel)
    await kernel.service.apply(echoes("sse-combine-a"))
    await kernel.service.apply(echoes("sse-combine-b"))
    await execute(api, "sse-combine-a", corr="c1")
    b_c1 = await execute(api, "sse-combine-b", corr="c1")
    await execute(api, "sse-combine-b", corr="c2")
    response, reader = await open_stream(
        api, workflowId="sse-combine-b", correlationId="c1", after="0"
    )
    frames = await reader.events_until("RunSucceeded")
    response.close()
    assert {f.data["executionId"] for f in frames} == {b_c1}


@pytest.mark.parametrize(
    ("params", "headers", "status", "where"),
    [
        ({"executionId": "not-a-uuid"}, {}, 422, {"parameter": "executionId"}),
        ({"workflowId": "bad id!"}, {}, 422, {"parameter": "workflowId"}),
        ({"correlationId": "has space"}, {}, 422, {"parameter": "correlationId"}),
        ({"after": "12"}, {}, 422, {"parameter": "after"}),
        ({}, {"Last-Event-ID": "yesterday"}, 400, {"header": "Last-Event-ID"}),
        ({"executionId": str(uuid.UUID(int=7))}, {}, 404, None),
    ],
)
async def test_bad_filters_are_refused_before_the_stream_starts(
    kernel_factory, api_factory, params, headers, status, where
):
    kernel = await kernel_factory()
    api = await api_factory(kernel, run_worker=False)
    resp = await api.get(STREAM, params=params, headers=headers)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert set(body) == {"code", "message", "details"}
    if where is not None:
        assert body["details"] == where
    assert kernel.events.subscribers == 0


async def test_a_client_that_goes_away_is_cleaned_up(kernel_factory, api_factory):
    kernel = await kernel_factory(sse_ping_seconds=0.05)
    api = await api_factory(kernel, run_worker=False)
    response, _reader = await open_stream(api)
    assert kernel.events.subscribers == 1
    response.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while kernel.events.subscribers:  # gone at the stream's next write (a ping)
        assert loop.time() < deadline, "the stream outlived its client"
        await asyncio.sleep(0.02)


async def test_shutdown_ends_open_streams(kernel_factory, api_factory):
    kernel = await kernel_factory()
    api = await api_factory(kernel, run_worker=False)
    response, reader = await open_stream(api)
    await api.app.shutdown()  # what the server does first when it stops (on_shutdown)
    with pytest.raises(EOFError):
        await reader.frame(timeout=10)
    assert kernel.events.subscribers == 0
    response.close()
