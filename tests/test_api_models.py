"""Real responses match the pydantic models their routes declare (``@spec``), so the
response models (and the OpenAPI schemas made from them) cannot drift from the views."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web

from dataworkflows.api.app import ROUTE_TABLES
from dataworkflows.api.openapi import build_document
from dataworkflows.api.route_spec import RouteSpec, spec_of

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> dict[tuple[str, str], RouteSpec]:
    app = web.Application()
    for table in ROUTE_TABLES:
        app.add_routes(table)
    found = {}
    for route in app.router.routes():
        declared = spec_of(route.handler)
        if declared is not None and route.resource is not None:
            found[(route.method, route.resource.canonical)] = declared
    return found


class Checker:
    """Calls a route by its template and validates the answer against what it declares."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.declared = _declared()
        self.schemas = build_document(api.server.app)["components"]["schemas"]
        self.checked: set[str] = set()

    async def __call__(
        self, method: str, template: str, *, query: str = "", json: Any = None, **ids: str
    ) -> Any:
        declared = self.declared[(method, template)]
        resp = await self.api.request(method, template.format(**ids) + query, json=json)
        text = await resp.text()
        assert resp.status in declared.ok, (method, template, resp.status, text)
        _, model = declared.ok[resp.status]
        if model is None:
            assert text == ""
            return None
        body = await resp.json()
        assert isinstance(model, type), model
        model.model_validate(body)  # extra="forbid": an undeclared field fails
        root = {
            "$ref": f"#/components/schemas/{model.__name__}",
            "components": {"schemas": self.schemas},
        }
        errors = [str(e) for e in jsonschema_rs.Draft202012Validator(root).iter_errors(body)]
        assert not errors, (method, template, errors, body)
        self.checked.add(declared.operation_id)
        return body


@pytest.fixture
async def check(api_factory: Any, kernel_factory: Any) -> Checker:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    kernel = await kernel_factory(secret_key=key)
    return Checker(await api_factory(kernel))


W = "/api/v1/workflows/{workflow_id}"
T = W + "/triggers/{trigger_id}"
E = "/api/v1/executions/{execution_id}"


async def test_responses_match_their_declared_models(check: Checker, simple_echo: dict) -> None:
    await check("GET", "/health")
    await check("GET", "/api/v1/plugins", query="?all=true")
    await check("POST", "/api/v1/workflows", json=simple_echo)
    wf = {"workflow_id": "simple-echo"}
    await check("GET", "/api/v1/workflows")
    await check("GET", W, **wf)
    await check("PATCH", W, json={"description": "d", "note": "n"}, **wf)
    second = {**simple_echo, "description": "v2"}
    created = await check("POST", W + "/versions", json=second, **wf)
    await check("GET", W + "/versions", **wf)
    await check("GET", W + "/versions/{version}", version=str(created["version"]), **wf)
    await check("POST", W + "/publish", json={"version": 1}, **wf)
    await check("POST", W + "/publish", json={}, **wf)
    await check("POST", W + "/rollback", json={}, **wf)
    await check("GET", W + "/audit", **wf)

    run = await check("POST", W + "/execute", json={"trigger": {"x": 1}}, **wf)
    execution = {"execution_id": run["executionId"]}
    await _wait_final(check, run["executionId"])
    body = await check("GET", E, **execution)
    assert body["actions"], "the run has attempts to validate"
    events = await check("GET", E + "/events", **execution)
    assert events["items"]
    await check("GET", E + "/resources", **execution)
    await check("GET", E + "/logs", query="?nodeId=echo1&attempt=1", **execution)
    await check("GET", E + "/variables", **execution)
    await check("GET", E + "/children", **execution)
    await check("GET", W + "/executions", **wf)
    await check("GET", "/api/v1/executions", query="?workflowId=simple-echo")
    await check("GET", "/api/v1/dead-letters")
    command = {"command": "workflow.run", "payload": {"workflowId": "simple-echo"}}
    await _wait_final(check, (await check("POST", "/api/v1/commands", json=command))["executionId"])

    trigger = await check(
        "POST",
        W + "/triggers",
        json={"type": "webhook", "name": "hook", "config": {}},
        **wf,
    )
    tr = {**wf, "trigger_id": trigger["id"]}
    await check("GET", W + "/triggers", **wf)
    await check("GET", T, **tr)
    await check("PATCH", T, json={"name": "renamed"}, **tr)
    await check("PUT", T, json={"config": {}}, **tr)
    await check("POST", T + "/disable", **tr)
    await check("POST", T + "/enable", **tr)
    await check("DELETE", T, **tr)

    cred = {"name": "chat-bot", "secret": "s3cret", "allowedHosts": ["api.example.com"]}
    await check("POST", "/api/v1/credentials", json=cred)
    await check("GET", "/api/v1/credentials")
    await check("GET", "/api/v1/credentials/{name}", name="chat-bot")
    await check("PUT", "/api/v1/credentials/{name}", json={"secret": "new-secret"}, name="chat-bot")
    await check("PUT", "/api/v1/credentials/{name}", json={"secret": "other-secret"}, name="other")
    await check("DELETE", "/api/v1/credentials/{name}", name="chat-bot")

    await check("POST", W + "/archive", json={"note": "done"}, **wf)

    brief = json.loads((ROOT / "fixtures/templates/project-brief.json").read_text())
    ts = {"template_set_id": "project-brief"}
    await check("POST", "/api/v1/templates", json=brief)
    await check("GET", "/api/v1/templates")
    await check("GET", "/api/v1/templates/{template_set_id}", **ts)
    version = {"templates": {"one": {"source": "{{ a }}"}}, "sampleData": {"a": 1}}
    await check("POST", "/api/v1/templates/{template_set_id}/versions", json=version, **ts)
    await check(
        "POST", "/api/v1/templates/{template_set_id}/render", json={"template": "one"}, **ts
    )
    await check("DELETE", "/api/v1/templates/{template_set_id}", **ts)
    check_wft = json.loads((ROOT / "fixtures/workflow-templates/daily-http-check.json").read_text())
    wt = {"workflow_template_id": "daily-http-check"}
    await check("POST", "/api/v1/workflow-templates", json=check_wft)
    await check("GET", "/api/v1/workflow-templates")
    await check("GET", "/api/v1/workflow-templates/{workflow_template_id}", **wt)
    await check("PUT", "/api/v1/workflow-templates/{workflow_template_id}", json=check_wft, **wt)
    config = {"config": {"url": "https://example.com/"}, "workflowId": "check-example"}
    await check(
        "POST", "/api/v1/workflow-templates/{workflow_template_id}/instantiate", json=config, **wt
    )
    await check("DELETE", "/api/v1/workflow-templates/{workflow_template_id}", **wt)
    # every declared JSON response model was exercised at least once
    expected = {
        s.operation_id
        for s in check.declared.values()
        if any(isinstance(m, type) for _, m in s.ok.values())
    }
    missing = expected - check.checked - {"cancelExecution", "requeueDeadLetter"}
    assert not missing, missing


async def test_cancel_answers_match_the_declared_model(check: Checker, simple_echo: dict) -> None:
    slow = {
        **simple_echo,
        "nodes": [
            {
                "id": "echo1",
                "actionType": "core.echo",
                "parameters": {"message": "slow", "delayMs": 30000},
            }
        ],
    }
    slow.pop("startNode", None)
    await check("POST", "/api/v1/workflows", query="?autoActivate=true", json=slow)
    run = await check("POST", W + "/execute", json={}, workflow_id="simple-echo")
    await check("POST", E + "/cancel", execution_id=run["executionId"])
    await _wait_final(check, run["executionId"])
    assert "cancelExecution" in check.checked


async def _wait_final(check: Checker, execution_id: str) -> None:
    from dataworkflows.api.keys import kernel_key

    kernel = check.api.server.app[kernel_key]
    await kernel.ledger.wait_until_final(uuid.UUID(execution_id), timeout=30)
