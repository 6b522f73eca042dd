"""monday.get-items and monday.create-item against a local monday.com API v2."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

import dataworkflows_monday
from dataworkflows.secrets.keys import generate_key
from dataworkflows_monday import Filter, GetItems, OrderBy, translate_filters
from dataworkflows_monday.client import classify

ROOT = Path(__file__).resolve().parents[3]
KEY = generate_key()
LEGACY_COMPLEXITY = (
    "Complexity budget exhausted, query cost 30001 budget remaining 19986 out of 1000000 "
    "reset in 3 seconds"
)


def load(relative: str) -> Any:
    return json.loads((ROOT / "fixtures" / relative).read_text())


async def database_text(kernel: Any) -> str:
    from dataworkflows.db.schema import metadata

    parts = []
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.exec_driver_sql(f'SELECT * FROM "{table.name}"'):
                for value in row:
                    parts.append(
                        json.dumps(value, default=str)
                        if isinstance(value, dict | list)
                        else str(value)
                    )
    return "\n".join(parts)


async def monday_kernel(kernel_factory: Any, fake: Any, token: str | None = None) -> Any:
    kernel = await kernel_factory(
        plugins=[dataworkflows_monday],
        entrypoints=False,
        secret_key=KEY,
        extra={"monday_api_url": fake.url},
    )
    await kernel.credentials.store.put("default", "monday", token or fake.token)
    return kernel


def get_items(**parameters: Any) -> dict[str, Any]:
    return {
        "id": "monday-read",
        "displayName": "Read items",
        "nodes": [
            {
                "id": "items",
                "actionType": "monday.get-items",
                "parameters": {"boardId": "1234567890", **parameters},
                "retry": {"maxAttempts": 3, "initialDelay": 0, "jitter": False},
            }
        ],
    }


def create_item(**parameters: Any) -> dict[str, Any]:
    return {
        "id": "monday-create",
        "displayName": "Create an item",
        "nodes": [
            {
                "id": "create",
                "actionType": "monday.create-item",
                "parameters": {
                    "boardId": "1234567890",
                    "groupId": "topics",
                    "itemName": "{{ trigger.name }}",
                    "columnValues": {
                        "status": {"label": "{{ trigger.status }}"},
                        "text": "{{ trigger.note }}",
                    },
                    **parameters,
                },
                "retry": {"maxAttempts": 2, "initialDelay": 0, "jitter": False},
            }
        ],
    }


async def test_fixture_workflow_filters_and_paginates(kernel_factory, api_factory, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    api = await api_factory(kernel)
    definition = load("workflows/monday-get-items.json")
    request = load("requests/monday-get-items-trigger.json")
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=definition)).status == 201
    accepted = await (
        await api.post(f"/api/v1/workflows/{definition['id']}/execute", json=request)
    ).json()
    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    run = await (await api.get(f"/api/v1/executions/{accepted['executionId']}")).json()
    assert run["status"] == "Succeeded", run
    out = run["actions"][0]["outputs"]
    assert [i["name"] for i in out["items"]] == ["Task 1", "Task 3", "Task 4", "Task 6", "Task 7"]
    assert out["count"] == 5 and out["hasMore"] is False and out["pages"] == 3
    assert set(out["items"][0]["columns"]) == {"status", "text"}
    assert out["items"][0]["columns"]["status"] == {
        "text": "Stuck",
        "value": {"index": 2, "post_id": None},
    }
    assert out["items"][0]["group"] == {"id": "topics", "title": "Group Title"}

    # the board's status labels are read once, then monday gets their indexes: it compares
    # a status column's any_of by label index, and label text would match nothing
    assert fake_monday.operations() == [
        "columns",
        "items_page",
        "next_items_page",
        "next_items_page",
    ]
    columns, first, second, third = fake_monday.calls
    assert columns["variables"] == {"boardId": "1234567890", "columnIds": ["status"]}
    assert first["headers"]["Authorization"] == fake_monday.token
    assert first["headers"]["API-Version"] == "2025-04"
    assert first["variables"]["queryParams"] == {
        "rules": [{"column_id": "status", "compare_value": [0, 2], "operator": "any_of"}],
        "operator": "and",
    }
    assert [c["variables"]["limit"] for c in fake_monday.calls[1:]] == [2, 2, 1]
    assert second["variables"]["cursor"] and third["variables"]["columnIds"] == ["status", "text"]

    dump = await database_text(kernel)
    secret = fake_monday.token
    for form in (secret, base64.b64encode(secret.encode()).decode(), quote(secret, safe="")):
        assert form not in dump


async def test_limit_stops_pagination_and_reports_the_cursor(
    kernel_factory, run_workflow, fake_monday
):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    run = await run_workflow(
        kernel, get_items(limit=3, pageSize=2, filters={"status": ["Stuck", "Done"]}, match="or")
    )
    out = run["actions"][0]["outputs"]
    assert [i["name"] for i in out["items"]] == ["Task 1", "Task 2", "Task 4"]
    assert out["hasMore"] is True and out["cursor"]


async def test_order_and_numeric_filters(kernel_factory, run_workflow, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    run = await run_workflow(
        kernel,
        get_items(
            filters=[
                {"column": "numbers", "operator": "gte", "value": 50},
                {"column": "text", "operator": "empty"},
            ],
            match="or",
        ),
    )
    assert [i["name"] for i in run["actions"][0]["outputs"]["items"]] == [
        "Task 5",
        "Task 6",
        "Task 7",
    ]
    rules = fake_monday.calls[0]["variables"]["queryParams"]["rules"]
    assert rules == [
        {"column_id": "numbers", "compare_value": 50, "operator": "greater_than_or_equals"},
        {"column_id": "text", "compare_value": [], "operator": "is_empty"},
    ]


async def _names(kernel: Any, run_workflow: Any, **parameters: Any) -> list[str]:
    run = await run_workflow(kernel, get_items(**parameters))
    assert run["status"] == "Succeeded", run
    return [i["name"] for i in run["actions"][0]["outputs"]["items"]]


async def test_status_and_dropdown_filters_by_label_text(kernel_factory, run_workflow, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    fake_monday._add_item("Task 8", "topics", {"status": "", "text": "", "numbers": ""})
    names = await _names(kernel, run_workflow, filters={"status": "Done"})
    assert names == ["Task 2", "Task 5"]
    names = await _names(
        kernel, run_workflow, filters=[{"column": "status", "operator": "ne", "value": "Done"}]
    )
    assert names == ["Task 1", "Task 3", "Task 4", "Task 6", "Task 7", "Task 8"]
    # a blank status is "" (sent as 5, monday's blank index); case does not matter
    names = await _names(kernel, run_workflow, filters={"status": ["", "working on it"]})
    assert names == ["Task 3", "Task 6", "Task 8"]
    # dropdown columns compare label ids the same way
    names = await _names(kernel, run_workflow, filters={"dropdown": "Docs"})
    assert names == ["Task 1", "Task 4", "Task 7"]
    # other column types compare text: their values are sent unchanged
    names = await _names(kernel, run_workflow, filters={"text": "note 3"})
    assert names == ["Task 3"]
    rules = [
        c["variables"]["queryParams"]["rules"][0]
        for c in fake_monday.calls
        if c["operation"] == "items_page"
    ]
    assert [r["compare_value"] for r in rules] == [[1], [1], [5, 0], [3], ["note 3"]]
    assert fake_monday.operations().count("columns") == 5


async def test_label_indexes_and_text_operators_are_sent_as_given(
    kernel_factory, run_workflow, fake_monday
):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    names = await _names(kernel, run_workflow, filters={"status": [1]})
    assert names == ["Task 2", "Task 5"]
    names = await _names(
        kernel,
        run_workflow,
        filters=[{"column": "status", "operator": "contains_terms", "value": "Stuck"}],
    )
    assert names == ["Task 1", "Task 4", "Task 7"]
    names = await _names(
        kernel,
        run_workflow,
        filters=[{"column": "dropdown", "operator": "contains", "value": "front"}],
    )
    assert names == ["Task 1", "Task 4", "Task 7"]
    # nothing to translate: no column settings are read
    assert fake_monday.operations() == ["items_page"] * 3


async def test_an_unknown_label_fails_the_step_naming_the_known_labels(
    kernel_factory, run_workflow, fake_monday
):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    run = await run_workflow(kernel, get_items(filters={"status": ["Done", "Blocked"]}))
    assert run["status"] == "Failed"
    [attempt] = run["actions"]
    error = attempt["error"]
    assert error["code"] == "monday_unknown_label"
    assert "'Blocked'" in error["message"]
    assert "'Working on it', 'Done', 'Stuck'" in error["message"]
    assert error["details"]["knownLabels"] == ["Working on it", "Done", "Stuck"]
    assert fake_monday.operations() == ["columns"]


def test_filter_translation():
    assert translate_filters(None) is None
    assert translate_filters({"status": "Done", "owner": ["Ada", "Grace"]}) == {
        "rules": [
            {"column_id": "status", "compare_value": ["Done"], "operator": "any_of"},
            {"column_id": "owner", "compare_value": ["Ada", "Grace"], "operator": "any_of"},
        ],
        "operator": "and",
    }
    rules = translate_filters(
        [
            Filter(column="status", operator="ne", value="Done"),
            Filter(column="date4", operator="between", value=["2025-01-01", "2025-01-31"]),
            Filter(column="text", operator="contains", value="urgent"),
            Filter(column="people", operator="in", value=[1, 2], compareAttribute="id"),
        ],
        "or",
        [OrderBy(column="date4", direction="desc")],
    )
    assert rules == {
        "rules": [
            {"column_id": "status", "compare_value": ["Done"], "operator": "not_any_of"},
            {
                "column_id": "date4",
                "compare_value": ["2025-01-01", "2025-01-31"],
                "operator": "between",
            },
            {"column_id": "text", "compare_value": "urgent", "operator": "contains_text"},
            {
                "column_id": "people",
                "compare_value": [1, 2],
                "operator": "any_of",
                "compare_attribute": "id",
            },
        ],
        "operator": "or",
        "order_by": [{"column_id": "date4", "direction": "desc"}],
    }
    with pytest.raises(ValueError, match="unknown operator 'like'"):
        Filter(column="x", operator="like", value="y")
    with pytest.raises(ValueError, match="between needs"):
        GetItems.Params.model_validate(
            {"boardId": 1, "filters": [{"column": "d", "operator": "between", "value": 1}]}
        )
    with pytest.raises(ValueError, match="digits"):
        GetItems.Params.model_validate({"boardId": "board-1"})
    with pytest.raises(ValueError):
        GetItems.Params.model_validate({"boardId": 1, "pageSize": 501})


async def test_bad_operator_is_rejected_when_the_workflow_is_created(kernel_factory, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    from dataworkflows.common.errors import Unprocessable

    with pytest.raises(Unprocessable) as info:
        await kernel.service.apply(
            get_items(filters=[{"column": "status", "operator": "like", "value": "x"}])
        )
    assert "like" in json.dumps(info.value.details)
    assert fake_monday.calls == []


@pytest.mark.parametrize(
    ("parameters", "token", "code", "api_code"),
    [
        ({"filters": {"nope": 1}}, None, "monday_invalid_request", "InvalidColumnIdException"),
        ({}, "not-the-right-token-123", "monday_auth_error", "UNAUTHENTICATED"),
        ({"boardId": "42"}, None, "monday_board_not_found", None),
        ({"boardId": "42", "filters": {"status": "Done"}}, None, "monday_board_not_found", None),
        (
            {"filters": [{"column": "status", "operator": "contains", "value": "Do"}]},
            None,
            "monday_invalid_request",
            "INVALID_ARGUMENT",
        ),
    ],
)
async def test_permanent_errors_are_not_retried(
    kernel_factory, run_workflow, fake_monday, parameters, token, code, api_code
):
    kernel = await monday_kernel(kernel_factory, fake_monday, token=token)
    run = await run_workflow(kernel, get_items(**parameters))
    assert run["status"] == "Failed"
    assert [(a["status"], a["error"]["code"]) for a in run["actions"]] == [("Failed", code)]
    if api_code:
        assert run["actions"][0]["error"]["details"]["errors"][0]["code"] == api_code
    assert len(fake_monday.calls) == 1


async def test_complexity_budget_and_rate_limits_are_retried(
    kernel_factory, run_workflow, fake_monday
):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    fake_monday.complexity_exhausted(retry_in_seconds=0)
    run = await run_workflow(kernel, get_items(limit=2))
    assert run["status"] == "Succeeded", run
    assert [(a["status"], (a["error"] or {}).get("code")) for a in run["actions"]] == [
        ("RetriableFailure", "monday_complexity_budget_exhausted"),
        ("Succeeded", None),
    ]


async def test_expired_cursor_fails_the_step(kernel_factory, run_workflow, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    fake_monday.cursors.clear()
    original = fake_monday._page

    def forget(ids: list[str], limit: int, column_ids: Any) -> dict[str, Any]:
        page = original(ids, limit, column_ids)
        fake_monday.cursors.clear()  # the cursor expires at once
        return page

    fake_monday._page = forget  # type: ignore[method-assign]
    run = await run_workflow(kernel, get_items(limit=10, pageSize=2))
    assert run["status"] == "Failed"
    error = run["actions"][0]["error"]
    assert error["code"] == "monday_invalid_request"
    assert error["details"]["errors"][0]["code"] == "CursorExpiredError"


def _headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict(values)


@pytest.mark.parametrize(
    ("status", "body", "headers", "retriable", "code", "retry_after"),
    [
        (  # 2025-07 and later
            429,
            {
                "errors": [
                    {
                        "message": "Complexity budget exhausted",
                        "extensions": {
                            "code": "COMPLEXITY_BUDGET_EXHAUSTED",
                            "retry_in_seconds": 60,
                        },
                    }
                ]
            },
            {},
            True,
            "monday_complexity_budget_exhausted",
            60.0,
        ),
        (  # 2025-01 .. 2025-04
            200,
            {
                "errors": [
                    {
                        "message": "Complexity budget exhausted",
                        "extensions": {
                            "code": "COMPLEXITY_BUDGET_EXHAUSTED",
                            "complexity": 6182,
                            "complexity_budget_left": 100,
                            "complexity_budget_limit": 5000000,
                            "retry_in_seconds": 7,
                            "status_code": 429,
                        },
                    }
                ]
            },
            {},
            True,
            "monday_complexity_budget_exhausted",
            7.0,
        ),
        (  # legacy (2024-10 and earlier)
            429,
            {
                "error_code": "ComplexityException",
                "status_code": 429,
                "error_message": LEGACY_COMPLEXITY,
                "error_data": {},
                "errors": [LEGACY_COMPLEXITY],
                "account_id": 1,
            },
            {},
            True,
            "monday_complexity_budget_exhausted",
            3.0,
        ),
        (
            429,
            {
                "errors": [
                    {
                        "message": "Rate limit exceeded for the account",
                        "extensions": {"code": "RATE_LIMIT_EXCEEDED", "retry_in_seconds": 30},
                    }
                ]
            },
            {"Retry-After": "30"},
            True,
            "monday_rate_limited",
            30.0,
        ),
        (
            200,
            {
                "errors": [
                    {
                        "message": "Max concurrency exceeded",
                        "extensions": {"code": "maxConcurrencyExceeded"},
                    }
                ]
            },
            {"Retry-After": "5"},
            True,
            "monday_rate_limited",
            5.0,
        ),
        (
            500,
            {"error_message": "Internal server error", "status_code": 500},
            {},
            True,
            "monday_server_error",
            None,
        ),
        (502, None, {}, True, "monday_server_error", None),
        (401, {"errors": ["Not Authenticated"]}, {}, False, "monday_auth_error", None),
        (
            200,
            {
                "data": {},
                "errors": [
                    {
                        "message": "User unauthorized to perform action",
                        "extensions": {
                            "code": "UserUnauthorizedException",
                            "error_data": {},
                            "status_code": 403,
                        },
                    }
                ],
                "account_id": 1,
            },
            {},
            False,
            "monday_auth_error",
            None,
        ),
        (
            200,
            {
                "errors": [
                    {
                        "message": "invalid value",
                        "extensions": {
                            "code": "ColumnValueException",
                            "error_data": {"column_type": "status"},
                        },
                    }
                ]
            },
            {},
            False,
            "monday_invalid_request",
            None,
        ),
        (
            400,
            {
                "errors": [
                    {
                        "message": "Request body is not valid JSON",
                        "extensions": {"code": "JsonParseException"},
                    }
                ]
            },
            {},
            False,
            "monday_invalid_request",
            None,
        ),
    ],
)
def test_error_classification(status, body, headers, retriable, code, retry_after):
    error = classify(status, body, _headers(**headers))
    assert error is not None
    assert error.retriable is retriable
    assert error.code == code
    assert error.retry_after == retry_after
    assert classify(200, {"data": {"me": {"id": "1"}}}, _headers()) is None


async def test_create_item_twice_with_the_same_input_creates_one_item(
    kernel_factory, api_factory, fake_monday
):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    api = await api_factory(kernel)
    definition = create_item()
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=definition)).status == 201
    trigger = {"name": "Launch review", "status": "Working on it", "note": "from the engine"}
    before = len(fake_monday.items)

    async def execute(body: dict[str, Any]) -> dict[str, Any]:
        accepted = await (
            await api.post("/api/v1/workflows/monday-create/execute", json=body)
        ).json()
        await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
        return await (await api.get(f"/api/v1/executions/{accepted['executionId']}")).json()

    first = await execute({"trigger": trigger})
    assert first["status"] == "Succeeded", first
    out = first["actions"][0]["outputs"]
    assert out["created"] is True
    created_id = out["id"]
    assert fake_monday.items[created_id]["values"] == {
        "status": "Working on it",
        "text": "from the engine",
    }
    create_call = next(c for c in fake_monday.calls if c["operation"] == "create_item")
    assert isinstance(create_call["variables"]["columnValues"], str)
    assert json.loads(create_call["variables"]["columnValues"]) == {
        "status": {"label": "Working on it"},
        "text": "from the engine",
    }

    second = await execute({"trigger": trigger})  # a re-run: another request id, same input
    assert second["status"] == "Succeeded"
    assert second["actions"][0]["outputs"] == {**out, "created": False}
    assert len(fake_monday.items) == before + 1
    assert fake_monday.operations() == ["create_item", "items"]

    links = (await (await api.get(f"/api/v1/executions/{first['id']}/resources")).json())["items"]
    assert [(link["system"], link["type"], link["externalId"], link["url"]) for link in links] == [
        ("monday", "item", created_id, out["url"])
    ]
    assert links[0]["key"] == out["dedupeKey"]

    third = await execute({"trigger": {**trigger, "name": "Another item"}})
    assert third["actions"][0]["outputs"]["created"] is True
    assert len(fake_monday.items) == before + 2

    fake_monday.items[created_id]["state"] = "deleted"  # someone deleted it on monday.com
    fourth = await execute({"trigger": trigger})
    assert fourth["actions"][0]["outputs"]["created"] is True
    assert fourth["actions"][0]["outputs"]["id"] != created_id
    assert len(fake_monday.items) == before + 3


async def test_create_item_errors(kernel_factory, run_workflow, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    run = await run_workflow(
        kernel,
        create_item(columnValues={"nope": "x"}),
        trigger={"name": "x", "status": "Done", "note": "n"},
    )
    assert run["status"] == "Failed"
    assert run["actions"][0]["error"]["details"]["errors"][0]["code"] == "InvalidColumnIdException"
    fake_monday.queue(
        429,
        {
            "errors": [
                {
                    "message": "Rate limit exceeded",
                    "extensions": {"code": "RATE_LIMIT_EXCEEDED", "retry_in_seconds": 0},
                }
            ]
        },
    )
    run = await run_workflow(
        kernel,
        {**create_item(), "id": "monday-create-2"},
        trigger={"name": "y", "status": "Done", "note": "n"},
    )
    assert [a["status"] for a in run["actions"]] == ["RetriableFailure", "Succeeded"]


async def test_a_failing_run_does_not_leak_the_token(
    kernel_factory, run_workflow, fake_monday, caplog
):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    token = fake_monday.token
    # a misbehaving API that echoes the Authorization header in its error
    fake_monday.queue(
        200,
        {
            "errors": [
                {
                    "message": f"token {token} is not allowed here; {quote(token, safe='')}",
                    "extensions": {"code": "UserUnauthorizedException"},
                }
            ]
        },
    )
    with caplog.at_level("DEBUG"):
        run = await run_workflow(kernel, get_items())
    assert run["status"] == "Failed"
    assert "[REDACTED]" in run["actions"][0]["error"]["message"]
    text = json.dumps(run) + await database_text(kernel) + caplog.text
    for form in (token, base64.b64encode(token.encode()).decode(), quote(token, safe="")):
        assert form not in text


async def test_a_token_is_only_sent_to_its_allowed_hosts(kernel_factory, run_workflow, fake_monday):
    kernel = await monday_kernel(kernel_factory, fake_monday)
    await kernel.credentials.store.put(
        "default", "monday", fake_monday.token, allowed_hosts=["api.monday.com"]
    )
    run = await run_workflow(kernel, get_items())
    assert run["status"] == "Failed"
    assert run["actions"][0]["error"]["code"] == "credential_host_not_allowed"
    assert fake_monday.calls == []
