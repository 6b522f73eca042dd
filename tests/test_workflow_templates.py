"""Workflow templates over HTTP (docs/templates.md): CRUD, config validation listing every
problem, and a template instantiated into a Draft that publishes and runs — on every
backend."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

WFT = "/api/v1/workflow-templates"
ACME = {"X-Tenant-Id": "acme", "X-Principal": "ada"}
GLOBEX = {"X-Tenant-Id": "globex"}


async def answer(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return None if status == 204 else await resp.json()


@pytest.fixture
def http_check(load_fixture: Any) -> dict[str, Any]:
    return dict(load_fixture("workflow-templates/daily-http-check.json"))


@pytest.fixture
async def kernel(kernel_factory: Any) -> Any:
    # the daily HTTP check calls a local server: let http.request reach loopback
    return await kernel_factory(extra={"http_allow_networks": "127.0.0.1/32"})


async def test_crud_round_trip(api: Any, http_check: dict[str, Any], load_fixture: Any) -> None:
    created = await answer(await api.post(WFT, json=http_check, headers=ACME), 201)
    assert created["id"] == "daily-http-check" and created["createdBy"] == "ada"
    assert created["configSchema"] == http_check["configSchema"]
    slack = load_fixture("workflow-templates/webhook-to-slack.json")
    await answer(await api.post(WFT, json=slack, headers=ACME), 201)
    again = await api.post(WFT, json=http_check, headers=ACME)
    assert (await answer(again, 409))["code"] == "workflow_template_exists"

    listed = await answer(await api.get(f"{WFT}?limit=1", headers=ACME), 200)
    assert [t["id"] for t in listed["items"]] == ["daily-http-check"]
    rest = await answer(
        await api.get(f"{WFT}?limit=1&cursor={listed['nextCursor']}", headers=ACME), 200
    )
    assert [t["id"] for t in rest["items"]] == ["webhook-to-slack"] and not rest["nextCursor"]

    changed = {**http_check, "description": "v2"}
    put = await answer(await api.put(f"{WFT}/daily-http-check", json=changed, headers=ACME), 200)
    assert put["description"] == "v2"
    mismatch = await api.put(f"{WFT}/webhook-to-slack", json=changed, headers=ACME)
    assert (await answer(mismatch, 422))["details"]["problems"][0]["code"] == "id_mismatch"

    for resp in (
        await api.get(f"{WFT}/daily-http-check", headers=GLOBEX),
        await api.delete(f"{WFT}/daily-http-check", headers=GLOBEX),
        await api.post(f"{WFT}/daily-http-check/instantiate", json={}, headers=GLOBEX),
    ):
        assert (await answer(resp, 404))["code"] == "workflow_template_not_found"
    await answer(await api.delete(f"{WFT}/daily-http-check", headers=ACME), 204)
    gone = await api.get(f"{WFT}/daily-http-check", headers=ACME)
    assert (await answer(gone, 404))["code"] == "workflow_template_not_found"


async def test_invalid_templates_list_every_problem(api: Any, http_check: dict[str, Any]) -> None:
    bad = {
        **http_check,
        "configSchema": {"type": "object", "properties": {"n": {"type": "nope"}}},
        "definition": {"nodes": [{"$config": "a b"}, {"$config": "x", "other": 1}]},
    }
    error = await answer(await api.post(WFT, json=bad), 422)
    assert error["code"] == "invalid_workflow_template"
    problems = [(p["path"], p["code"]) for p in error["details"]["problems"]]
    assert problems == [
        ("$.configSchema.properties.n.type", "invalid_schema"),
        ("$.definition.nodes[0]", "invalid_placeholder"),
        ("$.definition.nodes[1]", "invalid_placeholder"),
    ]
    assert (await answer(await api.get(WFT), 200))["items"] == []


async def test_bad_config_is_422_listing_every_problem_and_writes_nothing(
    api: Any, http_check: dict[str, Any]
) -> None:
    await answer(await api.post(WFT, json=http_check), 201)
    config = {"expectedStatus": "200", "timeoutSeconds": 0, "colour": "red"}
    error = await answer(
        await api.post(f"{WFT}/daily-http-check/instantiate", json={"config": config}), 422
    )
    assert error["code"] == "invalid_config"
    problems = {(p["path"], p["code"]) for p in error["details"]["problems"]}
    assert problems == {
        ("$.config", "schema_required"),  # url is missing
        ("$.config", "schema_additionalProperties"),  # colour
        ("$.config.expectedStatus", "schema_type"),
        ("$.config.timeoutSeconds", "schema_exclusiveMinimum"),
    }
    assert (await answer(await api.get("/api/v1/workflows"), 200))["items"] == []


async def test_a_definition_the_config_breaks_is_invalid_definition(api: Any) -> None:
    template = {
        "id": "echo-n",
        "configSchema": {"type": "object", "properties": {"action": {"type": "string"}}},
        "definition": {
            "id": "x",
            "displayName": "Echo",
            "nodes": [{"id": "a", "actionType": {"$config": "action"}, "parameters": {}}],
        },
    }
    await answer(await api.post(WFT, json=template), 201)
    resp = await api.post(f"{WFT}/echo-n/instantiate", json={"config": {"action": "no.such"}})
    error = await answer(resp, 422)
    assert error["code"] == "invalid_definition"
    missing = await api.post(f"{WFT}/echo-n/instantiate", json={"config": {}})
    error = await answer(missing, 422)
    assert error["code"] == "invalid_config"
    assert error["details"]["problems"][0]["code"] == "config_value_missing"
    assert (await answer(await api.get("/api/v1/workflows"), 200))["items"] == []


async def test_instantiated_draft_publishes_and_runs(
    api: Any, kernel: Any, http_server: Any, http_check: dict[str, Any]
) -> None:
    http_server.reply("GET", "/status", json={"ok": True}, repeat=True)
    await answer(await api.post(WFT, json=http_check, headers=ACME), 201)
    body = {
        "config": {"url": http_server.url("/status"), "displayName": "Status page"},
        "workflowId": "status-check",
    }
    draft = await answer(
        await api.post(f"{WFT}/daily-http-check/instantiate", json=body, headers=ACME), 201
    )
    assert draft["id"] == "status-check" and draft["status"] == "Draft"
    assert draft["latestVersion"] == 1 and draft["displayName"] == "Status page"
    definition = draft["definition"]
    assert definition["nodes"][0]["parameters"]["url"] == http_server.url("/status")
    assert definition["nodes"][0]["parameters"]["timeoutSeconds"] == 10  # schema default
    assert definition["nodes"][0]["edges"][0]["condition"] == (
        "nodes.request.outputs.status == 200"
    )
    audit = await answer(await api.get("/api/v1/workflows/status-check/audit", headers=ACME), 200)
    [row] = audit["items"]
    assert row["action"] == "CREATE" and row["actor"] == "ada"
    assert row["note"] == "instantiated from workflow template 'daily-http-check'"
    taken = await api.post(f"{WFT}/daily-http-check/instantiate", json=body, headers=ACME)
    assert (await answer(taken, 409))["code"] == "workflow_exists"

    await answer(await api.post("/api/v1/workflows/status-check/publish", headers=ACME), 200)
    accepted = await answer(
        await api.post("/api/v1/workflows/status-check/execute", json={}, headers=ACME), 202
    )
    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    run = await answer(await api.get(accepted["statusUrl"], headers=ACME), 200)
    assert run["status"] == "Succeeded", run
    steps = {a["nodeId"]: a for a in run["actions"]}
    assert steps["request"]["outputs"]["status"] == 200
    assert steps["ok"]["outputs"]["echo"] == (
        f"status-check: {http_server.url('/status')} answered 200"
    )
    assert "unexpected" not in steps or steps["unexpected"]["status"] == "Skipped"
    assert len(http_server.requests_to("GET", "/status")) == 1


async def test_generated_workflow_ids_and_the_slack_template(api: Any, load_fixture: Any) -> None:
    slack = load_fixture("workflow-templates/webhook-to-slack.json")
    await answer(await api.post(WFT, json=slack), 201)
    made = await answer(
        await api.post(f"{WFT}/webhook-to-slack/instantiate", json={"config": {"channel": "C42"}}),
        201,
    )
    assert made["id"].startswith("webhook-to-slack-") and len(made["id"]) == 25
    params = made["definition"]["nodes"][0]["parameters"]
    assert params == {
        "channel": "C42",
        "text": "New event: {{ trigger | tojson }}",
        "credential": "slack",
    }
    assert made["definition"]["description"].startswith("Posts to C42 for every")
