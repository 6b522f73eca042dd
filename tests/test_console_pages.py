"""The web console over HTTP (dataworkflows.console; docs/console.md): every page renders
from the kernel's services for the request's tenant, actions need the form token and
change what they say, bad input gets an HTML error page with the right status, and the
console's routes stay out of the API's OpenAPI document. The browser half is in
test_console_browser.py."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.console import CONSOLE_ROUTES
from dataworkflows.console.rendering import TOKEN_COOKIE


class Noisy(Action):
    """Logs a line per attempt and fails permanently when ``fail`` is true."""

    type = "test.console-noisy"

    class Params(BaseModel):
        fail: bool = False
        note: str = ""

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        ctx.log.warning("noisy attempt %d says %s", ctx.attempt, params.note)
        if params.fail:
            return ActionResult.failed("noisy failed on purpose", code="noisy_failed")
        return ActionResult.succeeded({"said": params.note})


class NoisyPlugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Noisy)


def two_steps(workflow_id: str, *, fail: bool) -> dict[str, Any]:
    """first (core.echo) → second (noisy, fails when ``fail``)."""
    return {
        "id": workflow_id,
        "displayName": f"Console {workflow_id}",
        "startNode": "first",
        "nodes": [
            {
                "id": "first",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.word }}"},
                "edges": [{"targetNode": "second", "when": "success"}],
            },
            {
                "id": "second",
                "actionType": "test.console-noisy",
                "parameters": {"fail": fail, "note": "{{ nodes.first.outputs.echo }}"},
            },
        ],
    }


@pytest.fixture
async def console(kernel_factory, api_factory) -> Any:
    kernel = await kernel_factory(plugins=[NoisyPlugin()])
    return await api_factory(kernel)


async def _token(client: Any) -> str:
    """Open a page (which sets the form-token cookie) and return the token."""
    resp = await client.get("/")
    assert resp.status == 200
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(TOKEN_COOKIE)
    assert cookie is not None
    return cookie.value


async def _finished(client: Any, execution_id: str) -> dict[str, Any]:
    """Wait (on the event stream's history) until the run has ended; its API view."""
    async with client.get(f"/api/v1/events/stream?executionId={execution_id}") as stream:
        async for raw in stream.content:
            if raw.startswith(b"event: Run") and raw.strip().split(b": ")[1] in (
                b"RunSucceeded",
                b"RunFailed",
                b"RunCancelled",
            ):
                break
    return await (await client.get(f"/api/v1/executions/{execution_id}")).json()


async def _create(client: Any, definition: dict[str, Any]) -> None:
    resp = await client.post("/api/v1/workflows?autoActivate=true", json=definition)
    assert resp.status == 201, await resp.text()


async def test_every_page_renders_and_shows_the_run_it_is_about(console):
    await _create(console, two_steps("con-fail", fail=True))
    resp = await console.post(
        "/api/v1/workflows/con-fail/execute", json={"trigger": {"word": "hi"}}
    )
    run_id = (await resp.json())["executionId"]
    run = await _finished(console, run_id)
    assert run["status"] == "Failed"

    page = await (await console.get("/")).text()
    assert "con-fail" in page and "Failed" in page
    page = await (await console.get("/?q=con-&status=Active")).text()
    assert "/workflows/con-fail" in page
    page = await (await console.get("/?status=Archived")).text()
    assert "/workflows/con-fail" not in page

    page = await (await console.get("/workflows/con-fail")).text()
    assert '<svg class="graph"' in page
    # nodes are coloured by the last run: first succeeded, second failed
    assert re.search(r'data-node="first" data-status="Succeeded"', page)
    assert re.search(r'data-node="second" data-status="Failed"', page)
    assert "CREATE" in page or "PUBLISH" in page  # the audit trail

    page = await (await console.get(f"/runs/{run_id}")).text()
    assert 'data-final="true"' in page
    assert "noisy attempt 1 says hi" in page  # the failed step's log line
    assert "noisy failed on purpose" in page
    assert 'class="gantt"' in page and page.count('class="gantt-row"') == 2

    page = await (await console.get("/runs?workflowId=con-fail&status=Failed")).text()
    assert f"/runs/{run_id}" in page
    page = await (await console.get("/runs?status=Succeeded")).text()
    assert f"/runs/{run_id}" not in page
    for path in ("/dead-letters", "/plugins", "/credentials", "/api-reference"):
        resp = await console.get(path)
        assert resp.status == 200, path
        assert resp.content_type == "text/html"
    assert "test.console-noisy" in await (await console.get("/plugins")).text()
    static = await console.get("/console-static/console.js")
    assert static.status == 200 and "EventSource" in await static.text()


async def test_the_version_diff_shows_what_changed(console):
    await _create(console, two_steps("con-diff", fail=False))
    changed = two_steps("con-diff", fail=True)
    resp = await console.post("/api/v1/workflows/con-diff/versions", json=changed)
    assert resp.status == 201
    page = await (await console.get("/workflows/con-diff?from=1&to=2")).text()
    assert '<span class="del">-        &#34;fail&#34;: false,</span>' in page
    assert '<span class="add">+        &#34;fail&#34;: true,</span>' in page
    resp = await console.get("/workflows/con-diff?from=1&to=9")
    assert resp.status == 422
    assert "invalid_query" in await resp.text()


async def test_pages_are_scoped_to_the_tenant(console):
    await _create(console, two_steps("con-mine", fail=False))
    other = {"X-Tenant-Id": "other"}
    assert "con-mine" not in await (await console.get("/", headers=other)).text()
    resp = await console.get("/workflows/con-mine", headers=other)
    assert resp.status == 404
    assert resp.content_type == "text/html"
    assert "workflow_not_found" in await resp.text()


async def test_actions_need_the_form_token_and_change_nothing_without_it(console):
    await _create(console, two_steps("con-act", fail=False))
    resp = await console.post("/workflows/con-act/archive", data={"note": "x"})
    assert resp.status == 403
    assert "invalid_form_token" in await resp.text()
    resp = await console.post(
        "/workflows/con-act/archive",
        data={"token": "forged", "note": "x"},
        cookies={TOKEN_COOKIE: "another"},
    )
    assert resp.status == 403
    view = await (await console.get("/api/v1/workflows/con-act")).json()
    assert view["status"] == "Active"


async def test_lifecycle_run_cancel_rerun_and_credentials_through_forms(console):
    await _create(console, two_steps("con-flow", fail=False))
    token = await _token(console)
    # start a run from the page
    resp = await console.post(
        "/workflows/con-flow/run",
        data={"token": token, "trigger": '{"word": "form"}'},
        allow_redirects=False,
    )
    assert resp.status == 303
    run_id = resp.headers["Location"].removeprefix("/runs/")
    run = await _finished(console, run_id)
    assert run["status"] == "Succeeded" and run["trigger"] == {"word": "form"}
    assert run["requestId"].startswith("console:")
    # a bad trigger is a 400 page and starts nothing
    resp = await console.post("/workflows/con-flow/run", data={"token": token, "trigger": "[1"})
    assert resp.status == 400 and "invalid_json" in await resp.text()
    # rerun: a new run with the same trigger
    resp = await console.post(f"/runs/{run_id}/rerun", data={"token": token}, allow_redirects=False)
    assert resp.status == 303
    again = await _finished(console, resp.headers["Location"].removeprefix("/runs/"))
    assert again["id"] != run_id and again["trigger"] == {"word": "form"}
    runs = await (await console.get("/api/v1/executions?workflowId=con-flow")).json()
    assert len(runs["items"]) == 2
    # cancelling a finished run is a 409 page
    resp = await console.post(f"/runs/{run_id}/cancel", data={"token": token})
    assert resp.status == 409 and "execution_finished" in await resp.text()
    # archive with a note: an audit row, and the flash message on the next page
    resp = await console.post(
        "/workflows/con-flow/archive", data={"token": token, "note": "done with it"}
    )
    assert resp.status == 200
    page = await resp.text()
    assert "archive: con-flow is Archived" in page and "done with it" in page
    # credentials: created and rotated, the value never shown
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    resp = await console.post(
        "/credentials", data={"token": token, "name": "console-key", "secret": secret}
    )
    page = await resp.text()
    assert resp.status == 200 and "console-key" in page and secret not in page
    resp = await console.post(
        "/credentials", data={"token": token, "name": "console-key", "secret": "another-value-1"}
    )
    assert resp.status == 409
    rotated = f"rotated-{uuid.uuid4().hex}"
    resp = await console.post(
        "/credentials/console-key/rotate", data={"token": token, "secret": rotated}
    )
    assert resp.status == 200 and rotated not in await resp.text()
    resp = await console.post(
        "/credentials/nope/rotate", data={"token": token, "secret": "another-value-2"}
    )
    assert resp.status == 404


async def test_bad_filters_are_clear_errors(console):
    for path, code in [
        ("/runs?status=Sleeping", "invalid_query"),
        ("/runs?from=yesterday", "invalid_query"),
        ("/runs?workflowId=%20bad%20id", "invalid_query"),
        ("/runs?cursor=nonsense", "invalid_cursor"),
        ("/runs/not-a-uuid", "execution_not_found"),
        (f"/runs/{uuid.uuid4()}", "execution_not_found"),
    ]:
        resp = await console.get(path)
        assert 400 <= resp.status < 500, path
        assert code in await resp.text(), path


def test_every_console_route_declares_a_role_and_none_is_in_the_api_document():
    assert {r.role for r in CONSOLE_ROUTES} <= {"public", "viewer", "runner", "editor", "admin"}
    # signing in and out is public; other pages are for viewers; every other POST needs more
    public = {r.path for r in CONSOLE_ROUTES if r.role == "public"}
    assert public == {"/login", "/logout"}
    for route in CONSOLE_ROUTES:
        if route.role != "public":
            assert (route.role == "viewer") == (route.method == "GET"), route
        assert route.handler.__doc__, route


async def test_console_routes_stay_out_of_the_openapi_document(console):
    document = await (await console.get("/api/v1/openapi.json")).json()
    pages = {
        route.resource.canonical
        for route in console.server.app.router.routes()
        if (route.resource.name or "").startswith("console.")
    }
    assert "/" in pages and "/runs/{execution_id}" in pages
    assert not pages & set(document["paths"])
    assert "/api/v1/executions/{execution_id}" in document["paths"]


async def test_triggers_switch_and_fire_from_the_workflow_page(console):
    await _create(console, two_steps("con-trig", fail=False))
    resp = await console.post(
        "/api/v1/workflows/con-trig/triggers", json={"type": "webhook", "config": {}}
    )
    assert resp.status == 201, await resp.text()
    trigger_id = (await resp.json())["id"]
    token = await _token(console)
    base = f"/workflows/con-trig/triggers/{trigger_id}"
    page = await (await console.get("/workflows/con-trig")).text()
    assert f'action="{base}/disable"' in page and f'action="{base}/fire"' in page

    resp = await console.post(f"{base}/disable", data={"token": token})
    assert resp.status == 200
    view = await (await console.get(f"/api/v1/workflows/con-trig/triggers/{trigger_id}")).json()
    assert view["enabled"] is False
    # a disabled trigger does not fire: 404 page, no run
    resp = await console.post(f"{base}/fire", data={"token": token})
    assert resp.status == 404
    assert (await (await console.get("/api/v1/executions")).json())["items"] == []

    await console.post(f"{base}/enable", data={"token": token})
    resp = await console.post(f"{base}/fire", data={"token": token}, allow_redirects=False)
    assert resp.status == 303
    run = await _finished(console, resp.headers["Location"].removeprefix("/runs/"))
    # the console's event has no "word": the definition's template says so
    assert run["status"] == "Failed" and "word" in run["error"]["message"]
    assert run["trigger"]["firedFrom"] == "console"
    assert run["trigger"]["triggerId"] == trigger_id
    # another tenant cannot switch it
    resp = await console.post(
        f"{base}/disable", data={"token": token}, headers={"X-Tenant-Id": "other"}
    )
    assert resp.status == 404
