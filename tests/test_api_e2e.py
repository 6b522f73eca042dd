"""The issue's user path, over real HTTP on 127.0.0.1, on every backend."""

from __future__ import annotations

from typing import Any


async def wait_final(api: Any, kernel: Any, execution_id: str) -> dict[str, Any]:
    import uuid

    await kernel.ledger.wait_until_final(uuid.UUID(execution_id), timeout=30)
    resp = await api.get(f"/api/v1/executions/{execution_id}")
    assert resp.status == 200
    return await resp.json()


async def test_fixture_workflow_runs_end_to_end(api, kernel, simple_echo, execute_request):
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["status"] == "Active"
    assert created["currentVersion"] == 1

    resp = await api.post("/api/v1/workflows/simple-echo/execute", json=execute_request)
    assert resp.status == 202
    accepted = await resp.json()
    # this server's own worker has free slots: it took the run in the enqueue transaction
    assert accepted["status"] == "Running"
    assert accepted["statusUrl"] == f"/api/v1/executions/{accepted['executionId']}"

    run = await wait_final(api, kernel, accepted["executionId"])
    assert run["status"] == "Succeeded"
    assert run["trigger"] == execute_request["trigger"]
    assert [(a["nodeId"], a["status"], a["outputs"]) for a in run["actions"]] == [
        ("echo1", "Succeeded", {"echo": "Hello from node 1"}),
        ("echo2", "Succeeded", {"echo": "Hello from node 2"}),
    ]
    assert all(a["parameters"] == {"message": a["outputs"]["echo"]} for a in run["actions"])
    assert run["actions"][0]["endedAt"] <= run["actions"][1]["startedAt"]

    resp = await api.get(f"/api/v1/executions/{accepted['executionId']}/events")
    events = (await resp.json())["items"]
    assert [e["type"] for e in events] == [
        "RunQueued",
        "RunStarted",
        "StepSucceeded",
        "StepSucceeded",
        "RunSucceeded",
    ]
    assert [e["sequence"] for e in events] == [1, 2, 3, 4, 5]


async def test_failed_node_fails_the_run_and_later_nodes_do_not_run(api, kernel):
    definition = {
        "id": "fails",
        "displayName": "Fails in the middle",
        "nodes": [
            {"id": "a", "actionType": "core.echo", "parameters": {"message": "ok"}},
            {
                "id": "b",
                "actionType": "core.echo",
                "parameters": {
                    "failAlways": True,
                    "failureKind": "permanent",
                    "failMessage": "boom",
                },
            },
            {"id": "c", "actionType": "core.echo", "parameters": {"message": "never"}},
        ],
    }
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=definition)).status == 201
    accepted = await (await api.post("/api/v1/workflows/fails/execute", json={})).json()
    run = await wait_final(api, kernel, accepted["executionId"])
    assert run["status"] == "Failed"
    assert [(a["nodeId"], a["status"]) for a in run["actions"]] == [
        ("a", "Succeeded"),
        ("b", "Failed"),
    ]
    assert run["error"]["nodeId"] == "b"
    assert run["error"]["code"] == "simulated_failure"
    assert "boom" in run["error"]["message"]
    assert run["endedAt"] is not None


async def test_same_request_id_gives_the_same_execution(api, kernel, simple_echo):
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    body = {"trigger": {"n": 1}, "requestId": "req-42"}
    first = await (await api.post("/api/v1/workflows/simple-echo/execute", json=body)).json()
    second_resp = await api.post("/api/v1/workflows/simple-echo/execute", json=body)
    assert second_resp.status == 202
    second = await second_resp.json()
    assert first["executionId"] == second["executionId"]
    await wait_final(api, kernel, first["executionId"])
    from sqlalchemy import func, select

    from dataworkflows.db.models import workflow_executions

    async with kernel.db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(workflow_executions))).scalar()
    assert count == 1


async def test_list_and_get_workflows(api, simple_echo):
    await api.post("/api/v1/workflows", json=simple_echo)
    listed = await (await api.get("/api/v1/workflows")).json()
    assert [(w["id"], w["status"]) for w in listed["items"]] == [("simple-echo", "Draft")]
    got = await (await api.get("/api/v1/workflows/simple-echo")).json()
    assert got["definition"] == simple_echo
    assert got["currentVersion"] is None and got["latestVersion"] == 1


async def test_draft_must_be_published_before_it_executes(api, kernel, simple_echo):
    await api.post("/api/v1/workflows", json=simple_echo)
    resp = await api.post("/api/v1/workflows/simple-echo/execute", json={})
    assert resp.status == 409
    body = await resp.json()
    assert body["code"] == "workflow_not_active"
    assert body["details"] == {"status": "Draft"}

    resp = await api.post("/api/v1/workflows/simple-echo/publish")
    assert resp.status == 200
    assert (await resp.json())["status"] == "Active"
    resp = await api.post("/api/v1/workflows/simple-echo/execute", json={})
    assert resp.status == 202
    await wait_final(api, kernel, (await resp.json())["executionId"])


async def test_health_and_plugins(api):
    health = await (await api.get("/health")).json()
    assert health["status"] == "ok"
    plugins = (await (await api.get("/api/v1/plugins")).json())["plugins"]
    echo = next(p for p in plugins if p["name"] == "echo")
    assert echo["distribution"] == "dataworkflows-echo"
    assert echo["version"]
    (action,) = echo["actions"]
    assert action["type"] == "core.echo"
    assert "message" in action["parametersSchema"]["properties"]
    assert "failAttempts" in action["parametersSchema"]["properties"]
    # default plugins only with ?all=true
    assert all(p["distribution"] != "dataworkflows" for p in plugins)
    everything = (await (await api.get("/api/v1/plugins?all=true")).json())["plugins"]
    assert any(p["distribution"] == "dataworkflows" for p in everything)
