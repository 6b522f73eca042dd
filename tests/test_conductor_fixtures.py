"""The issue's fixtures, run over the HTTP API on every backend, checked row by row."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


async def run_fixture(
    api: Any,
    kernel: Any,
    definition: dict[str, Any],
    body: dict[str, Any],
    *,
    principal: str | None = None,
) -> dict[str, Any]:
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=definition)
    assert resp.status == 201, await resp.text()
    headers = {"X-Principal": principal} if principal else {}
    resp = await api.post(
        f"/api/v1/workflows/{definition['id']}/execute", json=body, headers=headers
    )
    assert resp.status == 202, await resp.text()
    execution_id = (await resp.json())["executionId"]
    await kernel.ledger.wait_until_final(uuid.UUID(execution_id), timeout=30)
    resp = await api.get(f"/api/v1/executions/{execution_id}")
    assert resp.status == 200
    return dict(await resp.json())


def steps(run: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(a["nodeId"], a["attempt"], a["status"]) for a in run["actions"]]


def by_node(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The last row of each node."""
    return {a["nodeId"]: a for a in run["actions"]}


async def events(api: Any, run: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await api.get(f"/api/v1/executions/{run['id']}/events")
    return list((await resp.json())["items"])


async def test_retry_fixture_fails_twice_then_succeeds(api, kernel, load_fixture):
    definition = load_fixture("workflows/retry-workflow.json")
    body = load_fixture("requests/transient-failure-trigger.json")
    run = await run_fixture(api, kernel, definition, body)

    assert run["status"] == "Succeeded", run["error"]
    assert run["requestId"] == "transient-failure-1"
    assert steps(run) == [
        ("flaky", 1, "RetriableFailure"),
        ("flaky", 2, "RetriableFailure"),
        ("flaky", 3, "Succeeded"),
        ("report", 1, "Succeeded"),
    ]
    flaky = run["actions"][:3]
    for attempt in flaky[:2]:
        assert attempt["error"] == {
            "code": "simulated_failure",
            "message": f"upstream unavailable (attempt {attempt['attempt']})",
        }
        assert attempt["outputs"] is None
    # parameters are rendered once and stored on every attempt row (typed: an int)
    assert all(
        a["parameters"]
        == {"message": "delivered", "failAttempts": 2, "failMessage": "upstream unavailable"}
        for a in flaky
    )
    assert flaky[2]["outputs"] == {"echo": "delivered"}
    assert run["actions"][3]["outputs"] == {"echo": "delivered after 3 attempts"}
    # the backoff waited between attempts: 0.01 s then 0.02 s (no jitter)
    assert flaky[0]["endedAt"] <= flaky[1]["startedAt"] <= flaky[2]["startedAt"]
    types = [e["type"] for e in await events(api, run)]
    assert types == [
        "RunQueued",
        "RunStarted",
        "StepRetrying",
        "StepRetrying",
        "StepSucceeded",
        "StepSucceeded",
        "RunSucceeded",
    ]


async def test_retry_fixture_exhausts_its_attempts(api, kernel, load_fixture):
    definition = load_fixture("workflows/retry-workflow.json")
    body = {"trigger": {"message": "never", "failAttempts": 5}}
    run = await run_fixture(api, kernel, definition, body)

    assert run["status"] == "Failed"
    assert steps(run) == [
        ("flaky", 1, "RetriableFailure"),
        ("flaky", 2, "RetriableFailure"),
        ("flaky", 3, "Failed"),
    ]
    assert run["error"] == {
        "nodeId": "flaky",
        "attempt": 3,
        "code": "simulated_failure",
        "message": "upstream unavailable (attempt 3)",
    }


async def test_fanout_fanin_fixture(api, kernel, load_fixture):
    definition = load_fixture("workflows/fanout-fanin-workflow.json")
    run = await run_fixture(api, kernel, definition, {"trigger": {"orderId": "A-17"}})

    assert run["status"] == "Succeeded", run["error"]
    assert sorted(steps(run)) == sorted(
        (node, 1, "Succeeded") for node in ("split", "customer", "inventory", "pricing", "merge")
    )
    rows = by_node(run)
    branches = [rows[n] for n in ("customer", "inventory", "pricing")]
    # the branches start after split ended and before any of them ended: in parallel
    assert all(rows["split"]["endedAt"] <= b["startedAt"] for b in branches)
    assert max(b["startedAt"] for b in branches) < min(b["endedAt"] for b in branches)
    # the join starts only after every branch ended
    assert rows["merge"]["startedAt"] >= max(b["endedAt"] for b in branches)
    assert rows["merge"]["outputs"] == {
        "echo": {
            "order": "A-17",
            "parts": ["customer of A-17", "stock for A-17", "price of A-17"],
        }
    }
    assert rows["customer"]["parameters"] == {"message": "customer of A-17", "delayMs": 100}


@pytest.mark.parametrize(
    ("amount", "expected", "notify"),
    [
        (
            1500,
            {
                "check": "Succeeded",
                "review": "Succeeded",
                "auto-approve": "Skipped",
                "escalate": "Skipped",
                "notify": "Succeeded",
            },
            "manual",
        ),
        (
            200,
            {
                "check": "Succeeded",
                "review": "Skipped",
                "auto-approve": "Succeeded",
                "escalate": "Skipped",
                "notify": "Succeeded",
            },
            "automatic",
        ),
        (
            9000,
            {
                "check": "Succeeded",
                "review": "Failed",
                "auto-approve": "Skipped",
                "escalate": "Succeeded",
                "notify": "Succeeded",
            },
            "escalated",
        ),
    ],
)
async def test_conditional_branch_fixture(api, kernel, load_fixture, amount, expected, notify):
    definition = load_fixture("workflows/conditional-branch-workflow.json")
    run = await run_fixture(api, kernel, definition, {"trigger": {"amount": amount}})

    # a failure that a failure edge handles does not fail the run
    assert run["status"] == "Succeeded", run["error"]
    assert run["error"] is None
    rows = by_node(run)
    assert {node: row["status"] for node, row in rows.items()} == expected
    assert all(row["attempt"] == 1 for row in run["actions"]), "one row per node"
    assert rows["notify"]["outputs"] == {"echo": notify}
    assert rows["check"]["outputs"] == {"echo": {"amount": amount}}
    for row in run["actions"]:
        if row["status"] == "Skipped":
            assert row["parameters"] is None and row["outputs"] is None
    if amount > 5000:
        assert rows["review"]["error"]["code"] == "simulated_failure"
        assert rows["escalate"]["outputs"] == {
            "echo": "escalated: amount above the review limit (attempt 1)"
        }
    # skipped rows are written no later than what made them skipped allows: notify (the
    # join) ran after every one of its predecessors was resolved
    ended = {n: r["endedAt"] for n, r in rows.items() if n != "notify"}
    assert rows["notify"]["startedAt"] >= max(ended.values())


async def test_templated_params_fixture(api, kernel, load_fixture):
    definition = load_fixture("workflows/templated-params-workflow.json")
    trigger = {
        "user": {"name": "Ada", "tier": "gold"},
        "items": [{"sku": "A1", "price": 2.5}, {"sku": "B2", "price": 4}],
    }
    run = await run_fixture(api, kernel, definition, {"trigger": trigger}, principal="ada@x")

    assert run["status"] == "Succeeded", run["error"]
    assert steps(run) == [
        ("greet", 1, "Succeeded"),
        ("typed", 1, "Succeeded"),
        ("summary", 1, "Succeeded"),
    ]
    rows = by_node(run)
    assert rows["greet"]["parameters"] == {"message": "Hello Ada!"}
    typed = rows["typed"]["parameters"]["message"]
    assert typed == {
        "count": 2,
        "total": 6.5,
        "items": ["A1", "B2"],
        "user": {"name": "Ada", "tier": "gold"},
        "vip": True,
        "greeting": "Hello Ada!",
        "run": "templated-params v1 by ada@x",
        "executionId": run["id"],
    }
    assert rows["typed"]["outputs"] == {"echo": typed}
    assert rows["summary"]["outputs"] == {"echo": "2 items (A1, B2) for ADA, total 6.50"}


async def test_templated_params_fixture_missing_trigger_field_is_a_permanent_error(
    api, kernel, load_fixture
):
    definition = load_fixture("workflows/templated-params-workflow.json")
    trigger = {"user": {"name": "Ada", "tier": "gold"}, "items": [{"sku": "A1"}]}  # no price
    run = await run_fixture(api, kernel, definition, {"trigger": trigger})

    assert run["status"] == "Failed"
    # greet ran; typed failed on its first attempt (template errors are never retried)
    assert steps(run) == [("greet", 1, "Succeeded"), ("typed", 1, "Failed")]
    error = run["actions"][1]["error"]
    assert error["code"] == "template_error"
    assert error["details"] == {"path": "$.nodes[1].parameters.message.total"}
    assert error["message"] == (
        "node 'typed', $.nodes[1].parameters.message.total: "
        "undefined: there is no key 'price' here; to treat a missing key as absent write "
        "`….get('price')` or `… is defined`"
    )
    assert run["actions"][1]["parameters"] is None
    assert run["error"]["nodeId"] == "typed"
    assert run["error"]["code"] == "template_error"
