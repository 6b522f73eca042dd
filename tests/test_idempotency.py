"""``Idempotency-Key``: a retried POST replays the first response and creates nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func, select

from dataworkflows.api.idempotency import Reserved, fingerprint
from dataworkflows.api.middleware import idempotency_key
from dataworkflows.db.lifecycle_models import idempotency_keys, workflow_audit_log
from dataworkflows.db.models import workflow_definitions, workflow_executions, workflows


def echo(workflow_id: str = "idem", message: str = "hi") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Idempotent",
        "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": message}}],
    }


async def counts(kernel: Any) -> dict[str, int]:
    out = {}
    async with kernel.db.connect() as conn:
        for table in (workflows, workflow_definitions, workflow_executions, workflow_audit_log):
            out[table.name] = (await conn.execute(select(func.count()).select_from(table))).scalar()
    return out


def key(k: str, **extra: str) -> dict[str, str]:
    return {"Idempotency-Key": k, **extra}


async def test_a_retried_create_replays_the_first_response(api, kernel):
    first = await api.post("/api/v1/workflows", json=echo(), headers=key("create-1"))
    assert first.status == 201
    body = await first.json()
    before = await counts(kernel)
    again = await api.post("/api/v1/workflows", json=echo(), headers=key("create-1"))
    assert again.status == 201
    assert await again.json() == body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"] == "/api/v1/workflows/idem"
    assert "Idempotent-Replayed" not in first.headers
    assert await counts(kernel) == before
    # key order and whitespace do not make it a different request
    reordered = json.dumps(dict(reversed(list(echo().items()))), indent=4)
    replay = await api.post(
        "/api/v1/workflows",
        data=reordered,
        headers=key("create-1", **{"Content-Type": "application/json"}),
    )
    assert replay.status == 201 and await replay.json() == body
    # without the key the same request is a plain duplicate
    assert (await api.post("/api/v1/workflows", json=echo())).status == 409


async def test_the_same_key_for_another_request_is_422(api, kernel):
    assert (await api.post("/api/v1/workflows", json=echo(), headers=key("k"))).status == 201
    before = await counts(kernel)
    for method, path, body in [
        ("POST", "/api/v1/workflows", echo("idem", "other")),  # another body
        ("POST", "/api/v1/workflows?autoActivate=true", echo()),  # another query
        ("POST", "/api/v1/workflows/idem/publish", {}),  # another path
    ]:
        resp = await api.request(method, path, json=body, headers=key("k"))
        assert resp.status == 422, await resp.text()
        error = await resp.json()
        assert error["code"] == "idempotency_key_reused"
        assert error["details"] == {"originalMethod": "POST", "originalPath": "/api/v1/workflows"}
    assert await counts(kernel) == before


async def test_errors_are_not_stored_so_a_fixed_retry_goes_through(api, kernel):
    await api.post("/api/v1/workflows", json=echo())
    url = "/api/v1/workflows/idem/execute"
    resp = await api.post(url, json={}, headers=key("run-1"))
    assert resp.status == 409  # Draft
    assert (await counts(kernel))["workflow_executions"] == 0
    assert (await api.post("/api/v1/workflows/idem/publish")).status == 200
    resp = await api.post(url, json={}, headers=key("run-1"))
    assert resp.status == 202
    run = await resp.json()
    again = await api.post(url, json={}, headers=key("run-1"))
    assert again.status == 202 and await again.json() == run
    assert (await counts(kernel))["workflow_executions"] == 1
    # the run's request id is derived from the key: one run even if the stored response
    # were lost
    got = await (await api.get(run["statusUrl"])).json()
    assert got["requestId"] == "idem:run-1"


async def test_lifecycle_cancel_and_version_posts_replay(api_factory, kernel):
    api = await api_factory(kernel, run_worker=False)
    await api.post("/api/v1/workflows?autoActivate=true", json=echo())
    base = "/api/v1/workflows/idem"
    for path, body, status in [
        ("/versions", echo(message="v2"), 201),
        ("/publish", {"version": 2}, 200),
        ("/rollback", {}, 200),
        ("/archive", {}, 200),
    ]:
        first = await api.post(base + path, json=body, headers=key("k" + path))
        assert first.status == status, await first.text()
        audit = (await counts(kernel))["workflow_audit_log"]
        second = await api.post(base + path, json=body, headers=key("k" + path))
        assert (second.status, await second.json()) == (status, await first.json())
        assert (await counts(kernel))["workflow_audit_log"] == audit
    # cancel twice: the retry replays instead of 409 "already ended"
    await api.post(base + "/publish")  # Archived: a 409, not stored
    other = echo("other")
    await api.post("/api/v1/workflows?autoActivate=true", json=other)
    run = await (await api.post("/api/v1/workflows/other/execute", json={})).json()
    cancel = f"/api/v1/executions/{run['executionId']}/cancel"
    first = await api.post(cancel, headers=key("cancel-1"))
    second = await api.post(cancel, headers=key("cancel-1"))
    assert first.status == second.status == 200
    assert await first.json() == await second.json()
    assert (await api.post(cancel)).status == 409


async def test_keys_belong_to_a_tenant(api, kernel):
    a = await api.post("/api/v1/workflows", json=echo("wa"), headers=key("same"))
    b = await api.post(
        "/api/v1/workflows", json=echo("wb"), headers=key("same", **{"X-Tenant-Id": "b"})
    )
    assert a.status == b.status == 201
    assert (await b.json())["id"] == "wb"


async def test_a_pending_key_is_409_until_its_lock_expires(api_factory, kernel_factory, fake_clock):
    kernel = await kernel_factory(clock=fake_clock, idempotency_lock_seconds=30)
    api = await api_factory(kernel)
    store = api.server.app[idempotency_key]
    body = json.dumps(echo()).encode()
    outcome = await store.reserve(
        "default", "busy", fingerprint("POST", "/api/v1/workflows", body), "POST", "/x"
    )
    assert isinstance(outcome, Reserved)  # another server holds it, still working
    headers = key("busy", **{"Content-Type": "application/json"})
    resp = await api.post("/api/v1/workflows", data=body, headers=headers)
    assert resp.status == 409
    assert (await resp.json())["code"] == "idempotency_in_progress"
    assert (await counts(kernel))["workflows"] == 0
    fake_clock.advance(31)  # that server died: the key can be taken over
    resp = await api.post("/api/v1/workflows", data=body, headers=headers)
    assert resp.status == 201
    # the dead holder's late completion does not overwrite the new owner's response
    await store.complete("default", "busy", outcome.token, status=500, body=None, headers={})
    replay = await api.post("/api/v1/workflows", data=body, headers=headers)
    assert replay.status == 201


async def test_a_key_expires_after_the_ttl(api_factory, kernel_factory, fake_clock):
    kernel = await kernel_factory(clock=fake_clock, idempotency_ttl_seconds=3600)
    api = await api_factory(kernel)
    assert (await api.post("/api/v1/workflows", json=echo("w1"), headers=key("k"))).status == 201
    fake_clock.advance(3599)
    assert (await api.post("/api/v1/workflows", json=echo("w2"), headers=key("k"))).status == 422
    fake_clock.advance(2)
    resp = await api.post("/api/v1/workflows", json=echo("w2"), headers=key("k"))
    assert resp.status == 201
    assert "Idempotent-Replayed" not in resp.headers
    fake_clock.advance(3601 + 60)
    # expired keys are purged (at most once a minute)
    await api.post("/api/v1/workflows", json=echo("w3"), headers=key("other"))
    async with kernel.db.connect() as conn:
        keys = set((await conn.execute(select(idempotency_keys.c.key))).scalars())
    assert keys == {"other"}


async def test_bad_keys_are_400(api):
    for bad in ("x" * 256, "has space", ""):
        resp = await api.post("/api/v1/workflows", json=echo(), headers={"Idempotency-Key": bad})
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_header"


async def test_concurrent_duplicates_create_one_thing(api_factory, kernel_factory):
    """Two server instances (two kernels, two connection pools) on one database."""
    apis = [await api_factory(await kernel_factory()) for _ in range(2)]
    kernel = await kernel_factory()

    async def send(i: int, path: str, body: Any, k: str) -> tuple[int, Any]:
        resp = await apis[i % 2].post(path, json=body, headers=key(k))
        return resp.status, await resp.json()

    results = await asyncio.gather(
        *(send(i, "/api/v1/workflows?autoActivate=true", echo(), "create") for i in range(12))
    )
    created = [body for status, body in results if status == 201]
    assert created and all(body == created[0] for body in created)
    assert {status for status, _ in results} <= {201, 409}
    assert all(
        body["code"] == "idempotency_in_progress" for status, body in results if status == 409
    )
    assert (await counts(kernel))["workflows"] == 1

    results = await asyncio.gather(
        *(send(i, "/api/v1/workflows/idem/execute", {}, "go") for i in range(12))
    )
    accepted = [body for status, body in results if status == 202]
    assert accepted and all(body == accepted[0] for body in accepted)
    assert (await counts(kernel))["workflow_executions"] == 1
