"""The web console in strict mode (docs/console.md#signing-in): pages redirect to the
sign-in page, a bad credential sets no session, a signed-in browser acts with its token's
tenant and role (a viewer reads but cannot start a run), the session cookie opens the live
stream but never an API write, and static files stay public."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from dataworkflows.api.auth import SESSION_COOKIE
from dataworkflows.console.rendering import TOKEN_COOKIE
from dataworkflows.db.models import workflow_executions
from dataworkflows.testing.auth import api_token, bearer

HELLO = {
    "id": "hello-console",
    "displayName": "Hello",
    "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": "hi"}}],
}


async def form_token(client: Any) -> str:
    resp = await client.get("/login")
    assert resp.status == 200
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(TOKEN_COOKIE)
    assert cookie is not None
    return cookie.value


async def sign_in(client: Any, credential: str, next_: str = "/") -> Any:
    token = await form_token(client)
    return await client.post(
        "/login",
        data={"token": token, "credential": credential, "next": next_},
        allow_redirects=False,
    )


def session_of(client: Any) -> str | None:
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(SESSION_COOKIE)
    return None if cookie is None else cookie.value


async def runs(kernel: Any) -> int:
    async with kernel.db.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(workflow_executions))).scalar()


async def test_strict_console_signs_in_with_a_token_and_keeps_to_its_role(
    kernel_factory: Any, api_factory: Any
) -> None:
    kernel = await kernel_factory(auth_mode="strict")
    client = await api_factory(kernel)
    editor = await api_token(kernel, tenant="acme", role="editor")
    viewer = await api_token(kernel, tenant="acme", role="viewer")
    created = await client.post(
        "/api/v1/workflows?autoActivate=true", json=HELLO, headers=bearer(editor)
    )
    assert created.status == 201, await created.text()

    # not signed in: a page sends the browser to the sign-in page; static files are public
    resp = await client.get("/runs?status=Failed", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login?next=%2Fruns%3Fstatus%3DFailed"
    assert (await client.get("/console-static/console.css")).status == 200

    # a wrong credential: the form again with the reason, no session
    resp = await sign_in(client, "dwt_not-a-token")
    assert resp.status == 401
    assert "invalid_token" in await resp.text()
    assert session_of(client) is None

    # a viewer signs in: pages of its tenant, but no run started
    resp = await sign_in(client, viewer, "/workflows/hello-console")
    assert (resp.status, resp.headers["Location"]) == (303, "/workflows/hello-console")
    assert session_of(client) == viewer
    page = await client.get("/workflows/hello-console")
    assert page.status == 200
    assert "tenant <strong>acme</strong>" in await page.text()
    token = re.search(r'name="token" value="([^"]+)"', await page.text())
    assert token is not None
    refused = await client.post(
        "/workflows/hello-console/run", data={"token": token.group(1)}, allow_redirects=False
    )
    assert refused.status == 403
    assert await runs(kernel) == 0
    # the session opens reads of the API (the live stream) but never an API write
    assert (await client.get("/api/v1/workflows")).status == 200
    write = await client.post("/api/v1/workflows/hello-console/execute", json={})
    assert write.status == 401
    assert await runs(kernel) == 0

    # an editor's session may start a run from the page (a form with its token)
    client.session.cookie_jar.clear()
    resp = await sign_in(client, editor)
    assert resp.status == 303
    page = await client.get("/workflows/hello-console")
    token = re.search(r'name="token" value="([^"]+)"', await page.text())
    assert token is not None
    started = await client.post(
        "/workflows/hello-console/run", data={"token": token.group(1)}, allow_redirects=False
    )
    assert started.status == 303, await started.text()
    assert await runs(kernel) == 1

    # signing out forgets the session: pages redirect again
    resp = await client.post("/logout", data={"token": token.group(1)}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/login")
    assert session_of(client) is None
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_another_tenants_session_sees_nothing_of_acme(
    kernel_factory: Any, api_factory: Any
) -> None:
    kernel = await kernel_factory(auth_mode="strict")
    client = await api_factory(kernel)
    editor = await api_token(kernel, tenant="acme", role="editor")
    other = await api_token(kernel, tenant="globex", role="admin")
    created = await client.post(
        "/api/v1/workflows?autoActivate=true", json=HELLO, headers=bearer(editor)
    )
    assert created.status == 201
    assert (await sign_in(client, other)).status == 303
    assert (await client.get("/workflows/hello-console")).status == 404
    assert "hello-console" not in await (await client.get("/")).text()
