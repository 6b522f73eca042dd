"""Workflow lifecycle over HTTP: Draft → Active → Archived, versions, rollback, the audit
trail, and runs pinned to the version they started with (docs/api.md)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy import func, select

from dataworkflows.db.lifecycle_models import workflow_audit_log

ALICE = {"X-Principal": "alice"}


def echo_workflow(message: str, workflow_id: str = "life") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": f"Says {message}",
        "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": message}}],
    }


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["code"] == code, body
    return body


async def audit_count(kernel: Any) -> int:
    async with kernel.db.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(workflow_audit_log))).scalar()


async def test_create_version_publish_execute_rollback_archive(api_factory, kernel):
    # no worker yet: the runs stay queued ("in flight") while the workflow changes
    api = await api_factory(kernel, run_worker=False)
    base = "/api/v1/workflows/life"

    created = await ok(
        await api.post(
            "/api/v1/workflows",
            json=echo_workflow("v1"),
            headers=ALICE | {"X-Audit-Note": "first draft"},
        ),
        201,
    )
    assert (created["status"], created["currentVersion"], created["latestVersion"]) == (
        "Draft",
        None,
        1,
    )
    await error(await api.post(base + "/execute", json={}), 409, "workflow_not_active")
    # Draft cannot roll back: nothing was published
    body = await error(await api.post(base + "/rollback"), 409, "invalid_state")
    assert body["details"]["status"] == "Draft"

    v2 = await ok(await api.post(base + "/versions", json=echo_workflow("v2"), headers=ALICE), 201)
    assert v2 == {"workflowId": "life", "version": 2}
    # the same definition again names the version it duplicates
    body = await error(
        await api.post(base + "/versions", json=echo_workflow("v2")), 409, "duplicate_version"
    )
    assert body["details"]["version"] == 2

    published = await ok(await api.post(base + "/publish", headers=ALICE))
    assert (published["status"], published["currentVersion"]) == ("Active", 2)
    run_a = (await ok(await api.post(base + "/execute", json={}), 202))["executionId"]

    await ok(await api.post(base + "/versions", json=echo_workflow("v3"), headers=ALICE), 201)
    published = await ok(
        await api.post(base + "/publish", json={"version": 3, "note": "ship v3"}, headers=ALICE)
    )
    assert published["currentVersion"] == 3
    assert published["definition"]["nodes"][0]["parameters"]["message"] == "v3"
    run_b = (await ok(await api.post(base + "/execute", json={}), 202))["executionId"]

    # rollback without a version goes back to the version published before the current one
    rolled = await ok(
        await api.post(base + "/rollback", json={"note": "v3 is broken"}, headers=ALICE)
    )
    assert (rolled["status"], rolled["currentVersion"], rolled["latestVersion"]) == (
        "Active",
        2,
        3,
    )
    run_c = (await ok(await api.post(base + "/execute", json={}), 202))["executionId"]

    archived = await ok(await api.post(base + "/archive", headers=ALICE))
    assert archived["status"] == "Archived"
    # Archived is the end: no runs, no publish, no rollback, no versions, no second archive
    body = await error(await api.post(base + "/execute", json={}), 409, "workflow_not_active")
    assert body["details"] == {"status": "Archived"}
    for path, payload in [
        ("/publish", None),
        ("/rollback", None),
        ("/archive", None),
        ("/versions", echo_workflow("v4")),
    ]:
        body = await error(await api.post(base + path, json=payload), 409, "invalid_state")
        assert body["details"]["status"] == "Archived"

    # the queued runs now execute, each with the version it pinned
    kernel.start_worker()
    pinned = {}
    for run_id in (run_a, run_b, run_c):
        await kernel.ledger.wait_until_final(uuid.UUID(run_id), timeout=30)
        run = await ok(await api.get(f"/api/v1/executions/{run_id}"))
        assert run["status"] == "Succeeded", run
        pinned[run_id] = (run["workflowVersion"], run["actions"][0]["outputs"]["echo"])
    assert pinned == {run_a: (2, "v2"), run_b: (3, "v3"), run_c: (2, "v2")}

    # the audit trail, newest first
    trail = (await ok(await api.get(base + "/audit")))["items"]
    assert [(a["action"], a["version"]) for a in trail] == [
        ("ARCHIVE", 2),
        ("ROLLBACK", 2),
        ("PUBLISH", 3),
        ("VERSION", 3),
        ("PUBLISH", 2),
        ("VERSION", 2),
        ("CREATE", 1),
    ]
    assert {a["actor"] for a in trail} == {"alice"}
    assert trail[-1]["note"] == "first draft"
    assert trail[1]["note"] == "v3 is broken"
    assert trail[1]["diff"] == {"fromVersion": 3, "toVersion": 2}
    assert trail[2]["note"] == "ship v3"
    assert trail[3]["diff"]["nodesChanged"] == ["say"]
    assert trail[3]["diff"]["changedFields"] == ["displayName"]
    assert all(a["correlationId"] for a in trail)

    versions = (await ok(await api.get(base + "/versions")))["items"]
    assert [(v["version"], v["current"], v["latest"], v["createdBy"]) for v in versions] == [
        (1, False, False, "alice"),
        (2, True, False, "alice"),
        (3, False, True, "alice"),
    ]
    v3 = await ok(await api.get(base + "/versions/3"))
    assert v3["definition"] == echo_workflow("v3")
    await error(await api.get(base + "/versions/9"), 404, "version_not_found")
    await error(await api.get(base + "/versions/99999999999999999999"), 404, "version_not_found")


async def test_publish_a_given_version_and_rollback_rules(api, kernel):
    base = "/api/v1/workflows/life"
    await ok(await api.post("/api/v1/workflows?autoActivate=true", json=echo_workflow("v1")), 201)
    # only version 1 was ever current: nothing earlier to go back to
    body = await error(await api.post(base + "/rollback"), 409, "no_earlier_version")
    assert body["details"]["currentVersion"] == 1
    for n in (2, 3):
        await ok(await api.post(base + "/versions", json=echo_workflow(f"v{n}")), 201)
    # publishing an older version directly is allowed (it is not a rollback)
    assert (await ok(await api.post(base + "/publish", json={"version": 3})))["currentVersion"] == 3
    # rollback must go to an earlier version than the current one
    body = await error(
        await api.post(base + "/rollback", json={"version": 3}), 409, "not_an_earlier_version"
    )
    assert body["details"]["currentVersion"] == 3
    await error(await api.post(base + "/rollback", json={"version": 0}), 422, "invalid_request")
    await error(
        await api.post(base + "/rollback", json={"version": 10**30}), 404, "version_not_found"
    )
    # never published, but explicitly asked for: version 2
    assert (await ok(await api.post(base + "/rollback", json={"version": 2})))[
        "currentVersion"
    ] == 2
    # default target: the most recent version published before the current one (1, not 3)
    assert (await ok(await api.post(base + "/rollback")))["currentVersion"] == 1
    # re-publishing the current version changes nothing and writes no audit row
    before = await audit_count(kernel)
    assert (await ok(await api.post(base + "/publish", json={"version": 1})))["currentVersion"] == 1
    assert await audit_count(kernel) == before


async def test_lifecycle_bodies_are_checked_and_change_nothing(api, kernel):
    base = "/api/v1/workflows/life"
    await ok(await api.post("/api/v1/workflows", json=echo_workflow("v1")), 201)
    before = await audit_count(kernel)
    await error(await api.post(base + "/publish", json={"versoin": 1}), 422, "invalid_request")
    await error(await api.post(base + "/archive", json={"version": 1}), 422, "invalid_request")
    await error(await api.post(base + "/publish", json={"note": 5}), 422, "invalid_request")
    await error(
        await api.post(base + "/publish", json={"note": "x" * 1001}), 422, "invalid_request"
    )
    await error(await api.post(base + "/publish", json=[1]), 422, "invalid_request")
    await error(await api.post(base + "/publish", data=b"{nope"), 400, "malformed_json")
    await error(
        await api.post(base + "/publish", headers={"X-Audit-Note": "x" * 1001}),
        400,
        "invalid_header",
    )
    await error(
        await api.post(base + "/versions", json=echo_workflow("v2", "other")),
        422,
        "invalid_definition",
    )
    await error(
        await api.post(base + "/versions", json=echo_workflow("v1")), 409, "duplicate_version"
    )
    assert await audit_count(kernel) == before
    got = await ok(await api.get(base))
    assert (got["status"], got["latestVersion"]) == ("Draft", 1)


async def test_patch_metadata_writes_an_update_audit_row(api, kernel):
    base = "/api/v1/workflows/life"
    await ok(await api.post("/api/v1/workflows", json=echo_workflow("v1")), 201)
    patched = await ok(
        await api.patch(
            base,
            json={"displayName": "Renamed", "description": "does things", "note": "tidy"},
            headers=ALICE,
        )
    )
    assert (patched["displayName"], patched["description"]) == ("Renamed", "does things")
    assert patched["latestVersion"] == 1  # metadata is not a new version
    latest = (await ok(await api.get(base + "/audit?limit=1")))["items"][0]
    assert latest["action"] == "UPDATE"
    assert latest["actor"] == "alice" and latest["note"] == "tidy"
    assert latest["diff"] == {
        "displayName": {"from": "Says v1", "to": "Renamed"},
        "description": {"from": None, "to": "does things"},
    }
    # no change, no row
    before = await audit_count(kernel)
    await ok(await api.patch(base, json={"displayName": "Renamed"}))
    assert await audit_count(kernel) == before
    await error(await api.patch(base, json={"status": "Active"}), 422, "invalid_request")
    await error(await api.patch(base, json={"displayName": ""}), 422, "invalid_request")
    await error(await api.patch(base, json={"description": 3}), 422, "invalid_request")
    await error(await api.patch("/api/v1/workflows/nope", json={}), 404, "workflow_not_found")
    await ok(await api.post(base + "/archive"))
    body = await error(await api.patch(base, json={"displayName": "Again"}), 409, "invalid_state")
    assert body["details"]["status"] == "Archived"
    assert await audit_count(kernel) == before + 1  # the archive


async def test_audit_log_pages_newest_first(api):
    base = "/api/v1/workflows/life"
    definition = echo_workflow("v1")
    await ok(await api.post("/api/v1/workflows", json=definition), 201)
    for n in range(2, 7):
        changed = copy.deepcopy(definition)
        changed["nodes"][0]["parameters"]["message"] = f"v{n}"
        await ok(await api.post(base + "/versions", json=changed), 201)
    seen, cursor = [], None
    while True:
        url = base + "/audit?limit=4" + (f"&cursor={cursor}" if cursor else "")
        page = await ok(await api.get(url))
        assert len(page["items"]) <= 4
        seen += [a["version"] for a in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1]
    await error(await api.get(base + "/audit?limit=0"), 422, "invalid_query")
    await error(await api.get(base + "/audit?cursor=garbage"), 422, "invalid_cursor")
    await error(await api.get("/api/v1/workflows/nope/audit"), 404, "workflow_not_found")


async def test_apply_used_by_the_cli_is_audited(kernel, simple_echo):
    await kernel.service.apply(simple_echo, actor="deployer")
    changed = copy.deepcopy(simple_echo)
    changed["nodes"][0]["parameters"]["message"] = "changed"
    await kernel.service.apply(changed, actor="deployer")
    await kernel.service.apply(changed, actor="deployer")  # unchanged: nothing new
    trail = await kernel.service.get_audit("simple-echo")
    assert [(a["action"], a["version"], a["actor"]) for a in trail["items"]] == [
        ("PUBLISH", 2, "deployer"),
        ("VERSION", 2, "deployer"),
        ("PUBLISH", 1, "deployer"),
        ("CREATE", 1, "deployer"),
    ]
