"""Every list endpoint pages with ``limit`` + an opaque keyset ``cursor`` and filters."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from dataworkflows.db.models import dead_letters


def echo(workflow_id: str, name: str | None = None) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": name or workflow_id.title(),
        "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": "hi"}}],
    }


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["code"] == code, body
    return body


async def walk(api: Any, url: str, limit: int) -> tuple[list[Any], int]:
    """Every item of a list, page by page; returns (items, pages)."""
    items, cursor, pages = [], None, 0
    sep = "&" if "?" in url else "?"
    while True:
        page = await ok(
            await api.get(f"{url}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        )
        assert set(page) == {"items", "nextCursor"}
        assert len(page["items"]) <= limit
        items += page["items"]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            return items, pages


@pytest.fixture
async def quiet(api_factory, kernel_factory, fake_clock):
    """(api, kernel, clock) with no worker: runs stay Pending, time moves when told."""
    kernel = await kernel_factory(clock=fake_clock)
    return await api_factory(kernel, run_worker=False), kernel, fake_clock


async def test_workflows_page_in_id_order_and_filter(api):
    ids = ["alpha", "beta", "gamma-report", "delta", "epsilon-report"]
    for workflow_id in ids:
        await ok(await api.post("/api/v1/workflows", json=echo(workflow_id)), 201)
    await ok(await api.post("/api/v1/workflows/beta/publish"))
    await ok(await api.post("/api/v1/workflows/delta/archive"))

    items, pages = await walk(api, "/api/v1/workflows", 2)
    assert [w["id"] for w in items] == sorted(ids)
    assert pages == 3
    assert "definition" not in items[0]

    async def ids_of(query: str) -> list[str]:
        return [w["id"] for w in (await ok(await api.get("/api/v1/workflows?" + query)))["items"]]

    assert await ids_of("status=Active") == ["beta"]
    assert await ids_of("status=Archived") == ["delta"]
    assert await ids_of("q=REPORT") == ["epsilon-report", "gamma-report"]
    assert await ids_of("q=Alph") == ["alpha"]  # display name "Alpha"
    assert await ids_of("q=report&status=Draft") == ["epsilon-report", "gamma-report"]
    assert await ids_of("q=%25") == []  # LIKE wildcards are literal
    assert await ids_of("q=_") == []

    # a new row sorting before the cursor does not shift the next page
    first = await ok(await api.get("/api/v1/workflows?limit=2"))
    await ok(await api.post("/api/v1/workflows", json=echo("aaa")), 201)
    second = await ok(await api.get(f"/api/v1/workflows?limit=2&cursor={first['nextCursor']}"))
    assert [w["id"] for w in second["items"]] == ["delta", "epsilon-report"]


@pytest.mark.parametrize(
    "query, code",
    [
        ("limit=0", "invalid_query"),
        ("limit=201", "invalid_query"),
        ("limit=abc", "invalid_query"),
        ("limit=-1", "invalid_query"),
        ("limit=%2B5", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=eyJrIjoid29ya2Zsb3dzIiwidiI6WzFdfQ", "invalid_cursor"),  # wrong key type
        ("status=Running", "invalid_query"),
    ],
)
async def test_bad_list_parameters_are_422(api, query, code):
    await error(await api.get("/api/v1/workflows?" + query), 422, code)


async def test_a_cursor_of_another_list_is_rejected(api):
    for workflow_id in ("a1", "a2"):
        await ok(await api.post("/api/v1/workflows", json=echo(workflow_id)), 201)
    cursor = (await ok(await api.get("/api/v1/workflows?limit=1")))["nextCursor"]
    assert cursor
    await error(await api.get(f"/api/v1/executions?cursor={cursor}"), 422, "invalid_cursor")
    await error(await api.get(f"/api/v1/dead-letters?cursor={cursor}"), 422, "invalid_cursor")


async def test_executions_newest_first_with_filters_and_stable_pages(quiet):
    api, _kernel, clock = quiet
    start = clock.now()
    for workflow_id in ("one", "two"):
        await ok(await api.post("/api/v1/workflows?autoActivate=true", json=echo(workflow_id)), 201)
    made = []  # (workflow, execution id) oldest first
    for i in range(7):
        workflow_id = "one" if i % 2 == 0 else "two"
        if i == 5:
            clock.advance(0)  # two runs at the very same instant: the id breaks the tie
        else:
            clock.advance(60)
        run = await ok(await api.post(f"/api/v1/workflows/{workflow_id}/execute", json={}), 202)
        made.append((workflow_id, run["executionId"]))
    cancelled = made[2][1]
    await ok(await api.post(f"/api/v1/executions/{cancelled}/cancel"))

    items, pages = await walk(api, "/api/v1/executions", 3)
    assert pages == 3
    assert len(items) == 7
    keys = [(e["createdAt"], e["id"]) for e in items]
    assert keys == sorted(keys, reverse=True)
    assert {e["id"] for e in items} == {run for _, run in made}
    assert "actions" not in items[0] and "trigger" not in items[0]

    async def ids_of(query: str) -> list[str]:
        return [e["id"] for e in (await ok(await api.get("/api/v1/executions?" + query)))["items"]]

    ones = [run for workflow_id, run in made if workflow_id == "one"]
    assert set(await ids_of("workflowId=one")) == set(ones)
    assert await ids_of("status=Cancelled") == [cancelled]
    assert set(await ids_of("status=Pending&workflowId=one")) == set(ones) - {cancelled}
    window_from = (start + timedelta(seconds=120)).isoformat()
    window_to = (start + timedelta(seconds=240)).isoformat()
    window = await ids_of(
        f"from={window_from.replace('+', '%2B')}&to={window_to.replace('+', '%2B')}"
    )
    assert set(window) == {made[1][1], made[2][1]}
    assert await ids_of("from=2030-01-01T00:00:00Z") == []
    naive = (start + timedelta(seconds=300)).replace(tzinfo=None).isoformat()
    assert len(await ids_of(f"from={naive}")) == 3  # no offset means UTC

    nested = await ok(await api.get("/api/v1/workflows/two/executions?limit=50"))
    assert {e["workflowId"] for e in nested["items"]} == {"two"}
    assert len(nested["items"]) == 3

    # new runs while paging: the next page continues after the cursor, no duplicates
    first = await ok(await api.get("/api/v1/executions?limit=4"))
    clock.advance(60)
    await ok(await api.post("/api/v1/workflows/one/execute", json={}), 202)
    rest = await ok(await api.get(f"/api/v1/executions?limit=50&cursor={first['nextCursor']}"))
    seen = [e["id"] for e in first["items"] + rest["items"]]
    assert len(seen) == len(set(seen)) == 7

    for query in ("from=yesterday", "to=2026-13-01", "status=Done", "workflowId=%20x"):
        await error(await api.get("/api/v1/executions?" + query), 422, "invalid_query")
    await error(await api.get("/api/v1/workflows/nope/executions"), 404, "workflow_not_found")


async def test_events_page_in_sequence_order(api, kernel, simple_echo):
    await ok(await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo), 201)
    run = await ok(await api.post("/api/v1/workflows/simple-echo/execute", json={}), 202)
    await kernel.ledger.wait_until_final(uuid.UUID(run["executionId"]), timeout=30)
    url = f"/api/v1/executions/{run['executionId']}/events"
    items, pages = await walk(api, url, 2)
    assert [e["sequence"] for e in items] == [1, 2, 3, 4, 5]
    assert pages == 3
    after = await ok(await api.get(url + "?after=3"))
    assert [e["sequence"] for e in after["items"]] == [4, 5]
    await error(await api.get(url + "?after=-1"), 422, "invalid_query")
    await error(await api.get(url + "?after=99999999999999999999"), 422, "invalid_query")
    await error(await api.get(url + "?limit=1000"), 422, "invalid_query")


async def test_versions_and_dead_letters_page(quiet):
    api, kernel, clock = quiet
    await ok(await api.post("/api/v1/workflows?autoActivate=true", json=echo("v")), 201)
    for n in range(2, 6):
        await ok(await api.post("/api/v1/workflows/v/versions", json=echo("v", f"V{n}")), 201)
    items, pages = await walk(api, "/api/v1/workflows/v/versions", 2)
    assert [v["version"] for v in items] == [1, 2, 3, 4, 5]
    assert pages == 3

    runs = []
    for _ in range(3):
        clock.advance(1)
        runs.append(
            (await ok(await api.post("/api/v1/workflows/v/execute", json={}), 202))["executionId"]
        )
    async with kernel.db.begin() as conn:
        for i, run in enumerate(runs):
            await conn.execute(
                dead_letters.insert().values(
                    id=uuid.uuid4(),
                    execution_id=uuid.UUID(run),
                    workflow_id="v",
                    tenant_id="default",
                    reason="test",
                    details=None,
                    created_at=clock.now() + timedelta(seconds=i),
                )
            )
    items, pages = await walk(api, "/api/v1/dead-letters", 2)
    assert [d["executionId"] for d in items] == list(reversed(runs))
    assert pages == 2
    assert (await ok(await api.get("/api/v1/dead-letters?limit=5")))["nextCursor"] is None


async def test_trigger_and_credential_lists_are_paginated(api, kernel, simple_echo):
    """Every list endpoint pages the same way: ``limit`` + opaque ``cursor``."""
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    for i in range(5):
        resp = await api.post(
            "/api/v1/workflows/simple-echo/triggers",
            json={"type": "webhook", "name": f"hook {i}", "config": {}},
        )
        assert resp.status == 201, await resp.text()
    seen, cursor = [], None
    while True:
        url = "/api/v1/workflows/simple-echo/triggers?limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = await (await api.get(url)).json()
        assert len(page["items"]) <= 2
        seen += [t["name"] for t in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"hook {i}" for i in range(5)]
    bad = await api.get("/api/v1/workflows/simple-echo/triggers?cursor=nonsense")
    assert bad.status == 422 and (await bad.json())["code"] == "invalid_cursor"
    wrong_kind = await api.get("/api/v1/credentials?cursor=" + page_cursor_of_triggers(seen))
    assert wrong_kind.status == 422
    empty = await (await api.get("/api/v1/credentials?limit=1")).json()
    assert empty == {"items": [], "nextCursor": None}


async def test_credential_list_pages_by_name(api_factory, kernel_factory):
    from dataworkflows.secrets.keys import generate_key

    api = await api_factory(await kernel_factory(secret_key=generate_key()))
    for name in ("gamma", "alpha", "beta"):
        resp = await api.post("/api/v1/credentials", json={"name": name, "secret": "s3cret-value"})
        assert resp.status == 201, await resp.text()
    first = await (await api.get("/api/v1/credentials?limit=2")).json()
    assert [c["name"] for c in first["items"]] == ["alpha", "beta"]
    second = await (
        await api.get(f"/api/v1/credentials?limit=2&cursor={first['nextCursor']}")
    ).json()
    assert [c["name"] for c in second["items"]] == ["gamma"]
    assert second["nextCursor"] is None
    assert all("secret" not in c for c in first["items"] + second["items"])


def page_cursor_of_triggers(_seen):
    from datetime import UTC, datetime

    from dataworkflows.common.pagination import encode_cursor

    return encode_cursor("triggers", [datetime(2026, 1, 1, tzinfo=UTC), "x"])
