"""Bad input gets a specific ``{code, message, details}`` error and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from dataworkflows.db.schema import metadata


async def row_counts(kernel: Any) -> dict[str, int]:
    counts = {}
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            counts[table.name] = (
                await conn.execute(select(func.count()).select_from(table))
            ).scalar()
    return counts


async def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "details" in body, "every error body has code, message and details"
    return body


async def test_malformed_json_is_400(api, kernel):
    before = await row_counts(kernel)
    resp = await api.post(
        "/api/v1/workflows", data=b'{"id": "x",', headers={"Content-Type": "application/json"}
    )
    await assert_error(resp, 400, "malformed_json")
    assert await row_counts(kernel) == before


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42"])
async def test_json_that_is_not_an_object_is_422(api, kernel, body):
    resp = await api.post("/api/v1/workflows", data=body)
    await assert_error(resp, 422, "invalid_request")


async def test_empty_body_is_400(api):
    await assert_error(await api.post("/api/v1/workflows", data=b""), 400, "empty_body")


async def test_body_over_the_limit_is_413(api_factory, kernel_factory, simple_echo):
    kernel = await kernel_factory(max_body_bytes=2048)
    api = await api_factory(kernel)
    padded = dict(simple_echo, description="x" * 4096)
    body = await assert_error(
        await api.post("/api/v1/workflows", json=padded), 413, "payload_too_large"
    )
    assert body["details"] == {"maxBytes": 2048}
    assert (await row_counts(kernel))["workflows"] == 0
    # under the limit the same request works
    assert (await api.post("/api/v1/workflows", json=simple_echo)).status == 201


async def test_invalid_definition_lists_every_problem_and_writes_nothing(api, kernel):
    before = await row_counts(kernel)
    definition = {
        "id": "broken",
        "displayName": "Broken",
        "startNode": "nowhere",
        "nodes": [
            {"id": "a", "actionType": "core.echo", "parameters": {"message": "hi", "volume": 11}},
            {"id": "a", "actionType": "core.echo"},
            {"id": "c", "actionType": "slackish.post"},
            {"id": "d", "actionType": "core.echo", "parameters": {"failAttempts": "many"}},
        ],
    }
    body = await assert_error(
        await api.post("/api/v1/workflows", json=definition), 422, "invalid_definition"
    )
    problems = {(p["path"], p["code"]) for p in body["details"]["problems"]}
    assert problems == {
        ("$.nodes[0].parameters.volume", "parameters"),
        ("$.nodes[1].id", "duplicate_node_id"),
        ("$.startNode", "missing_start_node"),
        ("$.nodes[2].actionType", "unknown_action_type"),
        ("$.nodes[3].parameters.failAttempts", "parameters"),
    }
    assert await row_counts(kernel) == before


async def test_definition_shape_errors_have_paths(api):
    body = await assert_error(
        await api.post("/api/v1/workflows", json={"id": "x", "nodes": [], "extra": 1}),
        422,
        "invalid_definition",
    )
    paths = {p["path"] for p in body["details"]["problems"]}
    assert {"$.displayName", "$.nodes", "$.extra"} <= paths


async def test_unknown_workflow_and_execution_are_404(api):
    await assert_error(await api.get("/api/v1/workflows/nope"), 404, "workflow_not_found")
    await assert_error(
        await api.post("/api/v1/workflows/nope/execute", json={}), 404, "workflow_not_found"
    )
    await assert_error(await api.post("/api/v1/workflows/nope/publish"), 404, "workflow_not_found")
    await assert_error(
        await api.get("/api/v1/executions/6d1f7a4e-0000-4000-8000-000000000000"),
        404,
        "execution_not_found",
    )
    await assert_error(
        await api.get("/api/v1/executions/not-a-uuid/events"), 404, "execution_not_found"
    )
    body = await assert_error(await api.get("/api/v1/nothing-here"), 404, "not_found")
    assert body["details"] == {"path": "/api/v1/nothing-here"}


async def test_wrong_method_is_405_json(api):
    body = await assert_error(await api.delete("/api/v1/workflows"), 405, "method_not_allowed")
    assert body["details"]["method"] == "DELETE"
    assert "GET" in body["details"]["allowed"] and "POST" in body["details"]["allowed"]
    assert body["message"] == "DELETE is not allowed on '/api/v1/workflows'"


async def test_malformed_json_says_where(api):
    resp = await api.post(
        "/api/v1/workflows",
        data=b'{\n  "id": "x",\n  oops}',
        headers={"Content-Type": "application/json"},
    )
    body = await assert_error(resp, 400, "malformed_json")
    assert body["details"] == {"line": 3, "column": 3}
    assert "at line 3 column 3" in body["message"]


async def test_definition_problems_speak_the_authors_terms(api):
    definition = {
        "id": "typos",
        "displayName": "Typos",
        "nodes": [
            {"id": "a", "actionType": "core.echo", "retyr": {"maxAttempts": 2}},
            {"id": "b", "actionType": "core.echo", "retry": {"maxAtempts": 2}},
            {"actionType": "core.echo"},
        ],
    }
    body = await assert_error(
        await api.post("/api/v1/workflows", json=definition), 422, "invalid_definition"
    )
    messages = {p["path"]: p["message"] for p in body["details"]["problems"]}
    assert messages["$.nodes[0].retyr"] == "unknown field 'retyr'; did you mean 'retry'?"
    assert messages["$.nodes[1].retry.maxAtempts"] == (
        "unknown field 'maxAtempts'; did you mean 'maxAttempts'?"
    )
    assert messages["$.nodes[2].id"] == "this field is required"
    assert not any(m.startswith(("Value error", "Extra inputs")) for m in messages.values())


async def test_creating_an_existing_workflow_is_409(api, kernel, simple_echo):
    assert (await api.post("/api/v1/workflows", json=simple_echo)).status == 201
    before = await row_counts(kernel)
    await assert_error(
        await api.post("/api/v1/workflows", json=simple_echo), 409, "workflow_exists"
    )
    assert await row_counts(kernel) == before


async def test_execute_request_errors(api, kernel, simple_echo):
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    before = await row_counts(kernel)
    url = "/api/v1/workflows/simple-echo/execute"
    await assert_error(await api.post(url, json={"trigger": [1]}), 422, "invalid_request")
    await assert_error(await api.post(url, json={"requestId": 5}), 422, "invalid_request")
    await assert_error(await api.post(url, json={"requestId": ""}), 422, "invalid_request")
    body = await assert_error(
        await api.post(url, json={"trigger": {}, "tirgger": {}}), 422, "invalid_request"
    )
    assert body["details"] == {"fields": ["tirgger"]}
    await assert_error(await api.post(url, data=b"{nope"), 400, "malformed_json")
    assert await row_counts(kernel) == before


async def test_bad_query_flag_is_422(api, simple_echo):
    await assert_error(
        await api.post("/api/v1/workflows?autoActivate=maybe", json=simple_echo),
        422,
        "invalid_query",
    )


async def test_publish_unknown_version_is_404(api, simple_echo):
    await api.post("/api/v1/workflows", json=simple_echo)
    await assert_error(
        await api.post("/api/v1/workflows/simple-echo/publish", json={"version": 7}),
        404,
        "version_not_found",
    )
    await assert_error(
        await api.post("/api/v1/workflows/simple-echo/publish", json={"version": "1"}),
        422,
        "invalid_request",
    )


async def test_a_request_id_reused_with_another_payload_is_409(api, kernel, simple_echo):
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    url = "/api/v1/workflows/simple-echo/execute"
    first = await api.post(url, json={"trigger": {"order": 1}, "requestId": "evt-1"})
    assert first.status == 202
    run_id = (await first.json())["executionId"]
    # the same event again (a redelivery): the first run, nothing new
    again = await api.post(url, json={"trigger": {"order": 1}, "requestId": "evt-1"})
    assert again.status == 202 and (await again.json())["executionId"] == run_id
    other = await api.post(url, json={"trigger": {"order": 2}, "requestId": "evt-1"})
    body = await assert_error(other, 409, "request_id_reused")
    assert body["details"] == {"executionId": run_id, "path": "$.requestId"}
    assert (await row_counts(kernel))["workflow_executions"] == 1
