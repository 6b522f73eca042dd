"""http.request against loopback servers (the tests allow-list loopback explicitly)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

import dataworkflows_http
from dataworkflows import Credential, CredentialError, StepOutcome
from dataworkflows_http import HttpRequest, retry_after_seconds


def params(**values: Any) -> HttpRequest.Params:
    return HttpRequest.Params.model_validate(values)


async def run(ctx: Any, **values: Any) -> Any:
    return await HttpRequest().run(ctx, params(**values))


async def test_get_returns_status_headers_and_parsed_json(recorder_factory, context):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/items")
        async def items(request: web.Request) -> web.Response:
            return web.json_response(
                {"items": [1, 2], "q": dict(request.query)}, headers={"X-Total": "2"}
            )

    server = await recorder_factory(routes)
    result = await run(
        context(),
        url=server.url("/items"),
        query={"page": 2, "tag": ["a", "b"], "flag": True},
        headers={"X-Trace": "t-1"},
    )
    assert result.outcome is StepOutcome.SUCCEEDED, result.error
    out = result.outputs
    assert out["status"] == 200
    assert out["json"]["items"] == [1, 2]
    assert out["json"]["q"] == {"page": "2", "tag": "a", "flag": "true"}
    assert out["headers"]["x-total"] == "2"
    assert out["redirects"] == 0
    sent = server.requests[0]
    assert sent["headers"]["X-Trace"] == "t-1"
    assert sent["query"]["page"] == "2"


async def test_json_and_raw_bodies_are_sent(recorder_factory, context):
    def routes(r: web.RouteTableDef) -> None:
        @r.post("/echo")
        async def echo(request: web.Request) -> web.Response:
            return web.Response(text=(await request.text()).upper(), content_type="text/plain")

    server = await recorder_factory(routes)
    result = await run(context(), method="POST", url=server.url("/echo"), json={"a": 1})
    assert result.outputs["text"] == '{"A": 1}'
    assert server.requests[0]["headers"]["Content-Type"].startswith("application/json")
    result = await run(context(), method="POST", url=server.url("/echo"), body="plain words")
    assert result.outputs["text"] == "PLAIN WORDS"


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="json or body"):
        params(url="http://x.test/", json={}, body="x")
    with pytest.raises(ValueError, match="http:// or https://"):
        params(url="file:///etc/passwd")
    with pytest.raises(ValueError, match="basic auth needs a username"):
        params(url="http://x.test/", auth={"type": "basic", "credential": "c"})
    assert params(url="{{ trigger.url }}").url == "{{ trigger.url }}"


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after"),
    [
        (500, {}, StepOutcome.RETRIABLE, None),
        (503, {"Retry-After": "7"}, StepOutcome.RETRIABLE, 7.0),
        (429, {"Retry-After": "2"}, StepOutcome.RETRIABLE, 2.0),
        (408, {}, StepOutcome.RETRIABLE, None),
        (404, {}, StepOutcome.FAILED, None),
        (401, {"Retry-After": "9"}, StepOutcome.FAILED, None),
    ],
)
async def test_status_mapping(recorder_factory, context, status, headers, outcome, retry_after):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/")
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"error": "nope"}, status=status, headers=headers)

    server = await recorder_factory(routes)
    result = await run(context(), url=server.url("/"))
    assert result.outcome is outcome
    assert result.error["code"] == f"http_{status}"
    assert result.error["details"]["status"] == status
    assert '"nope"' in result.error["details"]["body"]
    assert result.retry_after == retry_after


async def test_fail_on_status_false_returns_every_status(recorder_factory, context):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/")
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"missing": True}, status=404)

    server = await recorder_factory(routes)
    result = await run(context(), url=server.url("/"), failOnStatus=False)
    assert result.outcome is StepOutcome.SUCCEEDED
    assert result.outputs["status"] == 404
    assert result.outputs["json"] == {"missing": True}


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < retry_after_seconds(later) <= 120
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


async def test_response_size_cap(recorder_factory, context):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/sized")
        async def sized(request: web.Request) -> web.Response:
            return web.Response(body=b"x" * 5000)

        @r.get("/chunked")
        async def chunked(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(10):
                await resp.write(b"y" * 1000)
            await resp.write_eof()
            return resp

    server = await recorder_factory(routes)
    for path in ("/sized", "/chunked"):
        result = await run(context(), url=server.url(path), maxResponseBytes=4096)
        assert result.outcome is StepOutcome.FAILED
        assert result.error["code"] == "response_too_large"
    ok = await run(context(), url=server.url("/sized"), maxResponseBytes=5000)
    assert ok.outputs["text"] == "x" * 5000


async def test_timeout_is_retriable(recorder_factory, context):
    release = asyncio.Event()

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/slow")
        async def slow(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(text="late")

    server = await recorder_factory(routes)
    try:
        result = await run(context(), url=server.url("/slow"), timeoutSeconds=0.2)
    finally:
        release.set()
    assert result.outcome is StepOutcome.RETRIABLE
    assert result.error["code"] == "timeout"


async def test_connection_refused_is_retriable(recorder_factory, context):
    server = await recorder_factory(lambda r: None)
    url = server.url("/")
    await server.server.close()
    result = await run(context(), url=url)
    assert result.outcome is StepOutcome.RETRIABLE
    assert result.error["code"] == "connection_error"


async def test_redirects_are_followed_and_303_turns_post_into_get(recorder_factory, context):
    def routes(r: web.RouteTableDef) -> None:
        @r.post("/start")
        async def start(request: web.Request) -> web.Response:
            raise web.HTTPSeeOther("/next")

        @r.get("/next")
        async def nxt(request: web.Request) -> web.Response:
            raise web.HTTPFound("/end")

        @r.get("/end")
        async def end(request: web.Request) -> web.Response:
            return web.json_response({"done": True})

        @r.get("/loop")
        async def loop(request: web.Request) -> web.Response:
            raise web.HTTPFound("/loop")

    server = await recorder_factory(routes)
    result = await run(context(), method="POST", url=server.url("/start"), json={"a": 1})
    assert result.outputs["json"] == {"done": True}
    assert result.outputs["redirects"] == 2
    assert result.outputs["url"].endswith("/end")
    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("POST", "/start"),
        ("GET", "/next"),
        ("GET", "/end"),
    ]
    looped = await run(context(), url=server.url("/loop"), maxRedirects=3)
    assert looped.outcome is StepOutcome.FAILED
    assert looped.error["code"] == "too_many_redirects"
    unfollowed = await run(context(), url=server.url("/loop"), followRedirects=False)
    assert unfollowed.outputs["status"] == 302


async def test_credentials_as_auth(recorder_factory, context, memory_credentials):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/")
        async def echo(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

    server = await recorder_factory(routes)
    creds = memory_credentials({"api": "s3cret-token"})
    ctx = context(credentials=creds)
    await run(ctx, url=server.url("/"), auth={"type": "bearer", "credential": "api"})
    await run(
        ctx, url=server.url("/"), auth={"type": "basic", "credential": "api", "username": "ada"}
    )
    await run(
        ctx,
        url=server.url("/"),
        auth={"type": "header", "credential": "api", "name": "X-Api-Key", "prefix": "Key "},
    )
    await run(ctx, url=server.url("/"), auth={"type": "query", "credential": "api", "name": "key"})
    sent = server.requests
    assert sent[0]["headers"]["Authorization"] == "Bearer s3cret-token"
    assert (
        sent[1]["headers"]["Authorization"]
        == "Basic " + base64.b64encode(b"ada:s3cret-token").decode()
    )
    assert sent[2]["headers"]["X-Api-Key"] == "Key s3cret-token"
    assert sent[3]["query"]["key"] == "s3cret-token"


async def test_unknown_credential_fails_before_any_request(
    recorder_factory, context, memory_credentials
):
    server = await recorder_factory(lambda r: None)
    ctx = context(credentials=memory_credentials({}, tenant_id="tenant-a"))
    with pytest.raises(CredentialError) as info:
        await run(ctx, url=server.url("/"), auth={"type": "bearer", "credential": "other"})
    assert info.value.code == "credential_not_found"
    assert info.value.to_result().outcome is StepOutcome.FAILED
    assert server.requests == []


async def test_credential_is_only_sent_to_its_allowed_hosts(
    recorder_factory, context, memory_credentials
):
    server = await recorder_factory(lambda r: None)
    creds = memory_credentials({"api": Credential("api", "s3cret-token", ("api.example.com",))})
    result = await run(
        context(credentials=creds),
        url=server.url("/"),
        auth={"type": "bearer", "credential": "api"},
    )
    assert result.outcome is StepOutcome.FAILED
    assert result.error["code"] == "credential_host_not_allowed"
    assert server.requests == []


async def test_auth_is_not_forwarded_to_another_origin(
    recorder_factory, context, memory_credentials
):
    def other_routes(r: web.RouteTableDef) -> None:
        @r.get("/landing")
        async def landing(request: web.Request) -> web.Response:
            return web.json_response({"landed": True})

    other = await recorder_factory(other_routes)

    def routes(r: web.RouteTableDef) -> None:
        @r.get("/go")
        async def go(request: web.Request) -> web.Response:
            raise web.HTTPFound(other.url("/landing"))

    server = await recorder_factory(routes)
    creds = memory_credentials({"api": "s3cret-token"})
    result = await run(
        context(credentials=creds),
        url=server.url("/go"),
        auth={"type": "bearer", "credential": "api"},
    )
    assert result.outputs["json"] == {"landed": True}
    assert server.requests[0]["headers"]["Authorization"] == "Bearer s3cret-token"
    assert "Authorization" not in other.requests[0]["headers"]


async def test_installed_plugin_runs_in_a_workflow(kernel_factory, run_workflow, recorder_factory):
    def routes(r: web.RouteTableDef) -> None:
        @r.post("/orders")
        async def create(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response({"id": 7, "sku": body["sku"]}, status=201)

    server = await recorder_factory(routes)
    kernel = await kernel_factory(
        plugins=[dataworkflows_http],
        entrypoints=False,
        extra={"http_allow_networks": "127.0.0.1/32"},
    )
    definition = {
        "id": "http-order",
        "displayName": "Create an order",
        "nodes": [
            {
                "id": "create",
                "actionType": "http.request",
                "parameters": {
                    "method": "POST",
                    "url": server.url("/orders"),
                    "json": {"sku": "{{ trigger.sku }}"},
                },
            }
        ],
    }
    run = await run_workflow(kernel, definition, trigger={"sku": "A-1"})
    assert run["status"] == "Succeeded", run
    assert run["actions"][0]["outputs"]["json"] == {"id": 7, "sku": "A-1"}
    assert json.loads(server.requests[0]["body"]) == {"sku": "A-1"}
