"""Tenant scoping (loose mode): everything another tenant owns is a 404, never a leak."""

from __future__ import annotations

import base64
import os
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from dataworkflows.api.operations import OPERATIONS
from dataworkflows.db.lifecycle_models import workflow_audit_log
from dataworkflows.db.models import dead_letters

ACME = {"X-Tenant-Id": "acme", "X-Principal": "bob", "Correlation-Id": "acme-req-1"}
GLOBEX = {"X-Tenant-Id": "globex", "X-Principal": "mallory"}


def definition(message: str = "hi") -> dict[str, Any]:
    return {
        "id": "shared",
        "displayName": "Acme's workflow",
        "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": message}}],
    }


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def acme_world(api: Any, kernel: Any) -> dict[str, str]:
    """Acme's workflow, run, trigger, credential and dead letter; returns their ids."""
    await ok(
        await api.post("/api/v1/workflows?autoActivate=true", json=definition(), headers=ACME),
        201,
    )
    run = await ok(await api.post("/api/v1/workflows/shared/execute", json={}, headers=ACME), 202)
    trigger = await ok(
        await api.post(
            "/api/v1/workflows/shared/triggers",
            json={"type": "webhook", "config": {}},
            headers=ACME,
        ),
        201,
    )
    await ok(
        await api.post(
            "/api/v1/credentials", json={"name": "acme-token", "secret": "s3cret!!"}, headers=ACME
        ),
        201,
    )
    await ok(await api.post("/api/v1/templates", json=TEMPLATE_SET, headers=ACME), 201)
    await ok(
        await api.post("/api/v1/workflow-templates", json=WORKFLOW_TEMPLATE, headers=ACME), 201
    )
    dead_letter = uuid.uuid4()
    async with kernel.db.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=dead_letter,
                execution_id=uuid.UUID(run["executionId"]),
                workflow_id="shared",
                tenant_id="acme",
                reason="test",
                created_at=kernel.clock.now(),
            )
        )
    return {
        "workflow_id": "shared",
        "execution_id": run["executionId"],
        "trigger_id": trigger["id"],
        "name": "acme-token",
        "dead_letter_id": str(dead_letter),
        "version": "1",
        "template_set_id": "brief",
        "workflow_template_id": "flow",
    }


TEMPLATE_SET = {"id": "brief", "templates": {"main": {"source": "Hi {{ name }}"}}}
WORKFLOW_TEMPLATE = {
    "id": "flow",
    "configSchema": {"type": "object"},
    "definition": {**definition(), "id": "from-template"},
}


BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/workflows/{workflow_id}/versions"): definition("changed"),
    ("PATCH", "/api/v1/workflows/{workflow_id}"): {"displayName": "pwned"},
    ("POST", "/api/v1/workflows/{workflow_id}/triggers"): {"type": "webhook", "config": {}},
    ("PATCH", "/api/v1/workflows/{workflow_id}/triggers/{trigger_id}"): {"enabled": False},
    ("PUT", "/api/v1/workflows/{workflow_id}/triggers/{trigger_id}"): {
        "type": "webhook",
        "config": {},
    },
    ("POST", "/api/v1/templates/{template_set_id}/versions"): {
        "templates": {"main": {"source": "pwned"}}
    },
    ("POST", "/api/v1/templates/{template_set_id}/render"): {"template": "main"},
    ("PUT", "/api/v1/workflow-templates/{workflow_template_id}"): {
        **WORKFLOW_TEMPLATE,
        "description": "pwned",
    },
}
#: per-tenant names, not ids: a PUT creates the caller's own credential of that name
NOT_SCOPED_BY_ID = {("PUT", "/api/v1/credentials/{name}")}


async def snapshot(api: Any, kernel: Any, ids: dict[str, str]) -> dict[str, Any]:
    async with kernel.db.connect() as conn:
        audit = (await conn.execute(select(func.count()).select_from(workflow_audit_log))).scalar()
        dead = (
            await conn.execute(select(dead_letters.c.requeued_at, dead_letters.c.tenant_id))
        ).all()
    workflow = await ok(await api.get("/api/v1/workflows/shared", headers=ACME))
    run = await ok(await api.get(f"/api/v1/executions/{ids['execution_id']}", headers=ACME))
    trigger = await ok(
        await api.get(f"/api/v1/workflows/shared/triggers/{ids['trigger_id']}", headers=ACME)
    )
    credential = await ok(await api.get("/api/v1/credentials/acme-token", headers=ACME))
    template_set = await ok(await api.get("/api/v1/templates/brief", headers=ACME))
    flow = await ok(await api.get("/api/v1/workflow-templates/flow", headers=ACME))
    return {
        "audit": audit,
        "dead": [tuple(r) for r in dead],
        "workflow": {k: workflow[k] for k in ("status", "currentVersion", "displayName")},
        "run": run["status"],
        "trigger": trigger["enabled"],
        "credential": credential["updatedAt"],
        "templateSet": template_set["latestVersion"],
        "workflowTemplate": flow["updatedAt"],
        "workflows": [
            w["id"] for w in (await ok(await api.get("/api/v1/workflows", headers=ACME)))["items"]
        ],
    }


@pytest.fixture
async def keyed(api_factory: Any, kernel_factory: Any) -> tuple[Any, Any]:
    """(api without a worker, kernel with a credential key)."""
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    kernel = await kernel_factory(secret_key=key)
    return await api_factory(kernel, run_worker=False), kernel


async def test_every_endpoint_with_another_tenants_ids_is_404(keyed):
    api, kernel = keyed
    ids = await acme_world(api, kernel)
    before = await snapshot(api, kernel, ids)

    tried = []
    for (method, template), _op in sorted(OPERATIONS.items()):
        names = re.findall(r"{(\w+)}", template)
        if not names or (method, template) in NOT_SCOPED_BY_ID:
            continue
        path = template.format(**{name: ids[name] for name in names})
        body = BODIES.get((method, template), {} if method in ("POST", "PATCH", "PUT") else None)
        resp = await api.request(method, path, json=body, headers=GLOBEX)
        assert resp.status == 404, (method, path, resp.status, await resp.text())
        error = await resp.json()
        assert error["code"].endswith("not_found"), error
        assert "'acme'" not in error["message"]  # never names the owner
        tried.append((method, template))
    # every endpoint that takes an id of a tenant's object was tried
    assert len(tried) >= 25
    assert await snapshot(api, kernel, ids) == before

    # lists show nothing of acme's
    for url in (
        "/api/v1/workflows",
        "/api/v1/executions",
        "/api/v1/executions?workflowId=shared",
        "/api/v1/dead-letters",
        "/api/v1/credentials",
        "/api/v1/templates",
        "/api/v1/workflow-templates",
    ):
        assert (await ok(await api.get(url, headers=GLOBEX)))["items"] == [], url
    # ... while acme sees its own
    assert len((await ok(await api.get("/api/v1/executions", headers=ACME)))["items"]) == 1
    assert len((await ok(await api.get("/api/v1/dead-letters", headers=ACME)))["items"]) == 1


async def test_execution_and_audit_rows_carry_tenant_principal_and_correlation(keyed):
    api, kernel = keyed
    ids = await acme_world(api, kernel)
    run = await ok(await api.get(f"/api/v1/executions/{ids['execution_id']}", headers=ACME))
    assert (run["principal"], run["correlationId"]) == ("bob", "acme-req-1")
    audit = (await ok(await api.get("/api/v1/workflows/shared/audit", headers=ACME)))["items"]
    assert {(a["actor"], a["correlationId"]) for a in audit} == {("bob", "acme-req-1")}
    async with kernel.db.connect() as conn:
        tenants = set((await conn.execute(select(workflow_audit_log.c.tenant_id))).scalars())
    assert tenants == {"acme"}


async def test_a_taken_workflow_id_does_not_say_whose_it_is(api, simple_echo):
    """Workflow ids are global (docs/api.md): creating one that another tenant uses is the
    same 409 as creating one's own twice, and nothing else about it is visible."""
    await ok(await api.post("/api/v1/workflows", json=simple_echo, headers=ACME), 201)
    own = await api.post("/api/v1/workflows", json=simple_echo, headers=ACME)
    other = await api.post("/api/v1/workflows", json=simple_echo, headers=GLOBEX)
    assert own.status == other.status == 409
    assert await own.json() == await other.json()
    assert (await api.get("/api/v1/workflows/simple-echo", headers=GLOBEX)).status == 404


async def test_bad_tenant_and_principal_headers_are_400(api):
    for headers in (
        {"X-Tenant-Id": "a" * 201},
        {"X-Tenant-Id": "has space"},
        {"X-Principal": "p" * 201},
    ):
        resp = await api.get("/api/v1/workflows", headers=headers)
        assert resp.status == 400, headers
        assert (await resp.json())["code"] == "invalid_header"
