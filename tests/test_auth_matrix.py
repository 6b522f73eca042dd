"""The strict-mode matrix (docs/auth.md): every route of the OpenAPI document, called with
no token, an expired, a revoked and a wrong-audience token, a token of another tenant in
every role, and each role of the owning tenant. Only the calls the route's
``x-required-role`` allows pass; the others are 401/403/404 and write nothing (every
table is compared before and after). A second tenant never gets an answer about the
first one's objects, whatever its role."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from sqlalchemy import select

from dataworkflows.api.operations import OPERATIONS
from dataworkflows.common.access import ROLES, role_allows
from dataworkflows.common.clock import FakeClock
from dataworkflows.db.models import dead_letters
from dataworkflows.db.schema import metadata
from dataworkflows.service.api_tokens import TokenStore
from dataworkflows.testing.auth import api_token, bearer, jwt_token

SECRET = "matrix-secret-of-at-least-32-bytes!!"
AUD = "dataworkflows"
SCRAPE = "scrape-token-for-the-matrix"
#: tables the engine writes on its own while a stream is open (the watcher's lease)
VOLATILE = {"event_stream_watchers"}
_serial = count()
#: credentials are named per tenant: another tenant's PUT creates its own of that name
NOT_SCOPED_BY_ID = {("PUT", "/api/v1/credentials/{name}")}


def definition(workflow_id: str, message: str = "hi") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": message}}],
    }


async def ok(resp: Any, status: int) -> Any:
    assert resp.status == status, (resp.method, resp.url, await resp.text())
    return await resp.json()


async def acme_world(api: Any, kernel: Any, admin: dict[str, str]) -> dict[str, str]:
    """A fresh workflow (v1, then v2 published), run, trigger, credential and dead letter
    of tenant acme; returns the path parameters naming them."""
    wf = f"wf-{next(_serial)}"
    await ok(
        await api.post("/api/v1/workflows?autoActivate=true", json=definition(wf), headers=admin),
        201,
    )
    versions = f"/api/v1/workflows/{wf}/versions"
    await ok(await api.post(versions, json=definition(wf, "v2"), headers=admin), 201)
    await ok(
        await api.post(f"/api/v1/workflows/{wf}/publish", json={"version": 2}, headers=admin), 200
    )
    run = await ok(await api.post(f"/api/v1/workflows/{wf}/execute", json={}, headers=admin), 202)
    trigger = await ok(
        await api.post(
            f"/api/v1/workflows/{wf}/triggers",
            json={"type": "webhook", "config": {}},
            headers=admin,
        ),
        201,
    )
    credential = f"cred-{wf}"
    await ok(
        await api.post(
            "/api/v1/credentials", json={"name": credential, "secret": "s3cret!!"}, headers=admin
        ),
        201,
    )
    letter = uuid.uuid4()
    async with kernel.db.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=letter,
                execution_id=uuid.UUID(run["executionId"]),
                workflow_id=wf,
                tenant_id="acme",
                reason="test",
                created_at=kernel.clock.now(),
            )
        )
    template_set = f"set-{wf}"
    await ok(await api.post("/api/v1/templates", json=brief(template_set), headers=admin), 201)
    workflow_template = f"wft-{wf}"
    await ok(
        await api.post(
            "/api/v1/workflow-templates", json=check_template(workflow_template), headers=admin
        ),
        201,
    )
    return {
        "template_set_id": template_set,
        "workflow_template_id": workflow_template,
        "workflow_id": wf,
        "execution_id": run["executionId"],
        "trigger_id": trigger["id"],
        "name": credential,
        "dead_letter_id": str(letter),
        "version": "1",
    }


def brief(set_id: str) -> dict[str, Any]:
    """A document template set (one template, with sample data)."""
    return {
        "id": set_id,
        "templates": {"brief": {"format": "markdown", "source": "# {{ project }}"}},
        "sampleData": {"project": "Apollo"},
    }


def check_template(template_id: str) -> dict[str, Any]:
    """A workflow template whose config names a URL."""
    return {
        "id": template_id,
        "configSchema": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
        "definition": {
            "id": "from-template",
            "displayName": "From a template",
            "nodes": [
                {"id": "a", "actionType": "core.echo", "parameters": {"message": "${message}"}}
            ],
        },
    }


def body_for(method: str, template: str, ids: dict[str, str]) -> Any:
    """A body the route accepts for the world ``ids``."""
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/api/v1/workflows"): definition(f"new-{next(_serial)}"),
        ("POST", "/api/v1/workflows/{workflow_id}/versions"): definition(ids["workflow_id"], "v3"),
        ("PATCH", "/api/v1/workflows/{workflow_id}"): {"displayName": "renamed"},
        ("POST", "/api/v1/workflows/{workflow_id}/rollback"): {"version": 1},
        ("POST", "/api/v1/workflows/{workflow_id}/triggers"): {"type": "webhook", "config": {}},
        ("PATCH", "/api/v1/workflows/{workflow_id}/triggers/{trigger_id}"): {"enabled": False},
        ("PUT", "/api/v1/workflows/{workflow_id}/triggers/{trigger_id}"): {
            "type": "webhook",
            "config": {},
        },
        ("POST", "/api/v1/credentials"): {"name": f"c-{next(_serial)}", "secret": "s3cret!!"},
        ("PUT", "/api/v1/credentials/{name}"): {"secret": "an0ther!!"},
        ("POST", "/api/v1/templates"): brief(f"set-new-{next(_serial)}"),
        ("POST", "/api/v1/templates/{template_set_id}/versions"): {
            "templates": {"brief": {"format": "text", "source": "v{{ n }}"}},
            "sampleData": {"n": next(_serial)},
        },
        ("POST", "/api/v1/templates/{template_set_id}/render"): {"template": "brief"},
        ("POST", "/api/v1/workflow-templates"): check_template(f"wft-new-{next(_serial)}"),
        ("PUT", "/api/v1/workflow-templates/{workflow_template_id}"): check_template(
            ids["workflow_template_id"]
        ),
        ("POST", "/api/v1/workflow-templates/{workflow_template_id}/instantiate"): {
            "config": {"message": "hello"},
            "workflowId": f"inst-{next(_serial)}",
        },
        ("POST", "/api/v1/commands"): {
            "command": "workflow.run",
            "payload": {"workflowId": ids["workflow_id"]},
        },
    }
    return bodies.get((method, template), {} if method in ("POST", "PATCH", "PUT") else None)


def fill(template: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], template)


async def snapshot(kernel: Any) -> dict[str, list[str]]:
    """Every row of every table (what "nothing written" is checked against)."""
    rows = {}
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name not in VOLATILE:
                result = await conn.execute(select(table))
                rows[table.name] = sorted(repr(tuple(r)) for r in result)
    return rows


async def call(api: Any, method: str, template: str, ids: dict[str, str], headers: Any) -> Any:
    resp = await api.request(
        method, fill(template, ids), json=body_for(method, template, ids), headers=headers
    )
    text = await resp.text() if "stream" not in template else ""
    resp.close()
    return resp.status, text


async def test_every_documented_route_allows_only_what_its_role_says(kernel_factory, api_factory):
    kernel = await kernel_factory(
        auth_mode="strict",
        jwt_secret=SECRET,
        jwt_audience=AUD,
        scrape_token=SCRAPE,
    )
    api = await api_factory(kernel, run_worker=False)
    acme = {role: bearer(await api_token(kernel, tenant="acme", role=role)) for role in ROLES}
    globex = {role: bearer(await api_token(kernel, tenant="globex", role=role)) for role in ROLES}
    revoked_store = TokenStore(kernel.db, kernel.clock)
    revoked = await revoked_store.create(tenant="acme", role="admin", name="gone")
    await revoked_store.revoke(revoked.view["id"])
    past = FakeClock(datetime.now(UTC) - timedelta(days=2))
    expired = await api_token(
        kernel, tenant="acme", role="admin", expires_in=timedelta(days=1), clock=past
    )
    unauthenticated = {
        "no token": {},
        "expired": bearer(expired),
        "revoked": bearer(revoked.token),
        "wrong audience": bearer(jwt_token(SECRET, tenant="acme", audience="another-api")),
        "expired jwt": bearer(jwt_token(SECRET, tenant="acme", audience=AUD, expires_in=-3600)),
    }
    document = await ok(await api.get("/api/v1/openapi.json"), 200)
    assert {"bearerAuth", "scrapeToken"} <= set(document["components"]["securitySchemes"])
    operations = [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    routes = {(method, path) for method, path, _ in operations}
    assert set(OPERATIONS) | {("GET", "/metrics"), ("POST", "/hooks/{trigger_id}")} <= routes
    checked: dict[str, int] = {}
    for method, template, op in operations:
        where = f"{method} {template}"
        required = op["x-required-role"]
        assert op["security"] == ([] if required == "public" else op["security"]), where
        ids = await acme_world(api, kernel, acme["admin"])
        before = await snapshot(kernel)
        by_id = ("{" in template or template == "/api/v1/commands") and (
            method,
            template,
        ) not in NOT_SCOPED_BY_ID
        refused: list[tuple[str, Any, tuple[int, ...]]] = []
        if required == "scrape":
            refused += [(w, h, (401,)) for w, h in unauthenticated.items()]
            refused += [(f"acme {r}", h, (401,)) for r, h in acme.items()]
        elif required != "public":
            refused += [(w, h, (401,)) for w, h in unauthenticated.items()]
            for role in ROLES:
                if not role_allows(role, required):
                    refused.append((f"acme {role}", acme[role], (403,)))
                    refused.append((f"globex {role}", globex[role], (403,)))
                elif by_id:
                    refused.append((f"globex {role}", globex[role], (404,)))
        for who, headers, statuses in refused:
            status, text = await call(api, method, template, ids, headers)
            assert status in statuses, (where, who, status, text)
            assert "acme" not in text, (where, who, text)  # never names the owner
            if 404 in statuses:
                assert '_not_found"' in text, (where, who, text)
        assert await snapshot(kernel) == before, where

        if required == "public":
            allowed = [("anyone", {})]
        elif required == "scrape":
            allowed = [("scraper", bearer(SCRAPE))]
        else:
            allowed = [(f"acme {r}", acme[r]) for r in ROLES if role_allows(r, required)]
        for index, (who, headers) in enumerate(allowed):
            if index and method != "GET":
                ids = await acme_world(api, kernel, acme["admin"])  # the last call changed it
            status, text = await call(api, method, template, ids, headers)
            assert 200 <= status < 300, (where, who, status, text)
        if required in ROLES and not by_id:  # lists and creations: only globex's own
            for role in ROLES:
                if role_allows(role, required) and method == "GET":
                    status, text = await call(api, method, template, ids, globex[role])
                    assert status == 200 and ids["workflow_id"] not in text, (where, role)
        checked[where] = len(refused) + len(allowed)
    assert len(checked) == len(operations)
