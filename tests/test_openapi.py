"""The OpenAPI document matches the real routes; correlation ids and the error shape hold on
every path; schemathesis fuzzes the live server and finds no 5xx and no off-schema reply."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import sys
from typing import Any

import jsonschema_rs
import pytest

from dataworkflows.api import create_app
from dataworkflows.api.app import ROUTE_TABLES
from dataworkflows.api.openapi import build_document, route_keys
from dataworkflows.api.operations import OPERATIONS
from dataworkflows.api.route_spec import DECLARED, PATH_PARAMETERS, spec_of


def _table_keys() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the kernel's own route tables declare."""
    from aiohttp import web

    app = web.Application()
    for table in ROUTE_TABLES:
        app.add_routes(table)
    return route_keys(app)


def test_every_kernel_route_is_documented_and_every_documented_route_exists():
    routes = _table_keys()
    missing = routes - set(OPERATIONS)
    assert not missing, f"routes without an OpenAPI operation (no @spec on the handler): {missing}"
    stale = set(OPERATIONS) - routes
    assert not stale, f"documented operations with no route: {stale}"
    # every handler that declares a @spec is served by a kernel route table
    from aiohttp import web

    app = web.Application()
    for table in ROUTE_TABLES:
        app.add_routes(table)
    routed = {route.handler for route in app.router.routes()}
    unrouted = [h.__qualname__ for h in DECLARED if h not in routed]
    assert not unrouted, f"@spec on handlers no kernel route table serves: {unrouted}"
    assert all(spec_of(route.handler) for route in app.router.routes() if route.method != "HEAD")
    # every path parameter of a kernel route has a declared schema
    names = {name for _, path in routes for name in re.findall(r"{([^}:]+)}", path)}
    assert names <= set(PATH_PARAMETERS), names - set(PATH_PARAMETERS)


async def test_the_served_document_covers_every_route_including_plugins(api):
    resp = await api.get("/api/v1/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"] == "3.1.0"
    served = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served == route_keys(api.server.app)
    # the webhook plugin's route is there, documented generically
    hook = document["paths"]["/hooks/{trigger_id}"]["post"]
    assert hook["tags"] == ["plugins"]
    assert hook["parameters"][0]["name"] == "trigger_id"
    # operation ids are unique
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    # the node schema lists the action types this server accepts
    node = document["components"]["schemas"]["Node"]
    assert "core.echo" in node["properties"]["actionType"]["enum"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


async def test_the_document_is_consistent_and_its_examples_are_valid(kernel):
    document = build_document(create_app(kernel))
    for ref in set(_refs(document)):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"unresolved $ref {ref}"
            node = node[part]
    schemas = document["components"]["schemas"]
    examples = 0
    for name, schema in schemas.items():
        root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
        validator = jsonschema_rs.Draft202012Validator(root)
        if "example" in schema:
            assert validator.is_valid(schema["example"]), name
            examples += 1
    assert examples >= 8
    for item in document["paths"].values():
        for op in item.values():
            path_params = [p for p in op["parameters"] if p.get("in") == "path"]
            assert all(p["required"] for p in path_params)
            assert "default" in op["responses"]
    # schemathesis can load it and sees every operation
    import schemathesis

    loaded = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == sum(len(item) for item in document["paths"].values())


async def test_the_docs_page_renders_every_operation_without_scripts(api):
    resp = await api.get("/api/v1/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for op in OPERATIONS.values():
        assert f"id='{op['operationId']}'" in page
    assert "WorkflowDefinition" in page


# -- correlation ids ----------------------------------------------------------------------


async def test_correlation_id_is_echoed_on_every_response(api_factory, kernel_factory, simple_echo):
    kernel = await kernel_factory(max_body_bytes=1024)
    api = await api_factory(kernel, run_worker=False)
    cases = [
        ("GET", "/health", None, 200),
        ("GET", "/api/v1/nothing-here", None, 404),  # aiohttp's router
        ("DELETE", "/api/v1/workflows", None, 405),
        ("POST", "/api/v1/workflows", {"id": "x"}, 422),
        ("POST", "/api/v1/workflows", {"description": "x" * 2048}, 413),
        ("GET", "/api/v1/workflows?limit=0", None, 422),
        ("GET", "/api/v1/openapi.json", None, 200),
    ]
    for method, path, body, status in cases:
        resp = await api.request(method, path, json=body, headers={"Correlation-Id": "abc-123"})
        assert resp.status == status, (path, await resp.text())
        assert resp.headers["Correlation-Id"] == "abc-123", path
        # and one is generated when none is given (X-Correlation-Id is accepted too)
        resp = await api.request(method, path, json=body)
        assert len(resp.headers["Correlation-Id"]) == 32
    resp = await api.get("/health", headers={"X-Correlation-Id": "legacy-1"})
    assert resp.headers["Correlation-Id"] == "legacy-1"
    resp = await api.get("/health", headers={"Correlation-Id": "x" * 300})
    assert resp.headers["Correlation-Id"] != "x" * 300  # replaced, not an error


async def test_correlation_id_is_stored_with_the_run_and_in_every_log_line(
    api_factory, kernel, simple_echo, caplog
):
    api = await api_factory(kernel, run_worker=False)
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    caplog.set_level(logging.DEBUG, logger="dataworkflows")
    caplog.clear()
    resp = await api.post(
        "/api/v1/workflows/simple-echo/execute", json={}, headers={"Correlation-Id": "trace-me"}
    )
    assert resp.status == 202
    records = [r for r in caplog.records if r.name.startswith("dataworkflows")]
    assert records, "the request logged nothing"
    assert {r.correlation_id for r in records} == {"trace-me"}
    run = await (await api.get((await resp.json())["statusUrl"])).json()
    assert run["correlationId"] == "trace-me"
    # without a header the run stores the generated id that the response echoed
    resp = await api.post("/api/v1/workflows/simple-echo/execute", json={})
    run = await (await api.get((await resp.json())["statusUrl"])).json()
    assert run["correlationId"] == resp.headers["Correlation-Id"]


# -- one error shape everywhere -----------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b'{"id": "a\\u0000b"}', 422, "invalid_request"),
        (b'{"trigger": {"\\u0000": 1}}', 422, "invalid_request"),
        (b'{"x": "\\ud800"}', 422, "invalid_request"),
        (b'{"x": NaN}', 400, "malformed_json"),
        (b'{"x": Infinity}', 400, "malformed_json"),
        # nesting is refused before parsing (DATAWORKFLOWS_JSON_MAX_DEPTH)
        (b"[" * 100000 + b"]" * 100000, 400, "json_limit_exceeded"),
        (b"\xff\xfe\x00", 400, "malformed_json"),
    ],
)
async def test_bodies_no_database_can_store_are_rejected(api, kernel, body, status, code):
    resp = await api.post(
        "/api/v1/workflows", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status, await resp.text()
    error = await resp.json()
    assert error["code"] == code
    assert set(error) <= {"code", "message", "details"}


async def test_405_keeps_the_allow_header(api):
    resp = await api.delete("/api/v1/workflows")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert (await resp.json())["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workflows/a%00b",
        "/api/v1/workflows/" + "x" * 300,
        "/api/v1/workflows/..%2F..",
        "/api/v1/workflows/ok/versions/99999999999999999999999",
        "/api/v1/executions/not-a-uuid",
        "/api/v1/executions/not-a-uuid/events",
    ],
)
async def test_odd_ids_are_plain_404s(api, path):
    resp = await api.get(path)
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["code"].endswith("not_found")


async def test_nul_in_a_query_value_is_422(api):
    resp = await api.get("/api/v1/workflows?q=a%00b")
    assert resp.status == 422
    assert (await resp.json())["code"] == "invalid_query"


# -- fuzzing the live server --------------------------------------------------------------

FUZZ_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


async def test_schemathesis_finds_no_server_error_and_no_off_schema_response(
    api_factory, kernel_factory, tmp_path
):
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    kernel = await kernel_factory(secret_key=key)
    api = await api_factory(kernel)
    url = str(api.make_url("/api/v1/openapi.json"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        url,
        "--checks",
        FUZZ_CHECKS,
        "--max-examples",
        "12",
        "--seed",
        "20261129",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        # an event stream answers 200 and never ends: its checks are in test_event_stream.py
        "--exclude-operation-id",
        "streamEvents",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20000:]
    assert "No issues found" in text or " passed" in text, text[-5000:]
    assert OPERATIONS  # the fuzzer went over the documented API
