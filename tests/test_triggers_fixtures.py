"""The trigger fixtures in fixtures/ work as documented in docs/triggers.md."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from dataworkflows.common.clock import FakeClock
from dataworkflows_webhook import sign

SECRET = "fixture-secret"


async def test_webhook_fixture_end_to_end(
    kernel_factory: Any,
    api_factory: Any,
    load_fixture: Any,
) -> None:
    # as docs/triggers.md's walk-through: the secret is a credential stored through the
    # API (SQLite: its key file is generated on first start), found by the trigger's
    # secretName through the same resolver actions use
    clock = FakeClock(datetime(2026, 2, 2, 9, 30, tzinfo=UTC))
    kernel = await kernel_factory(clock=clock)
    api = await api_factory(kernel)
    workflow = load_fixture("workflows/webhook-echo-workflow.json")
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=workflow)).status == 201
    credential = {"name": "webhook-echo-secret", "secret": SECRET}
    assert (await api.post("/api/v1/credentials", json=credential)).status == 201
    resp = await api.post(
        "/api/v1/workflows/webhook-echo/triggers",
        json=load_fixture("requests/create-webhook-trigger.json"),
    )
    assert resp.status == 201, await resp.text()
    trigger = await resp.json()

    body = json.dumps(load_fixture("requests/webhook-delivery.json")).encode()
    ts = int(clock.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(ts),
        "X-Signature-256": "sha256=" + sign(SECRET, body, ts),
        "X-Delivery-Id": "evt-001",
        "X-Sender": "helpdesk",
    }
    resp = await api.post(f"{trigger['info']['path']}?channel=support", data=body, headers=headers)
    assert resp.status == 202, await resp.text()
    execution_id = (await resp.json())["executionId"]
    assert await kernel.ledger.wait_until_final(uuid.UUID(execution_id), 30) == "Succeeded"
    run = await kernel.service.get_execution(execution_id)
    assert run["actions"][0]["outputs"]["echo"] == {
        "text": "Ticket 42 was opened",
        "action": "opened",
        "sender": "helpdesk",
        "channel": "support",
        "deliveryId": "evt-001",
    }

    # a ping is not activated (2xx, no run)
    ping = json.dumps({"action": "ping"}).encode()
    headers.update(
        {"X-Signature-256": "sha256=" + sign(SECRET, ping, ts), "X-Delivery-Id": "evt-002"}
    )
    resp = await api.post(trigger["info"]["path"], data=ping, headers=headers)
    assert resp.status == 200
    assert (await resp.json())["activated"] is False


async def test_schedule_fixture_end_to_end(kernel_factory: Any, load_fixture: Any) -> None:
    clock = FakeClock(datetime(2026, 2, 6, 12, 0, tzinfo=UTC))  # Friday
    kernel = await kernel_factory(clock=clock)
    await kernel.service.apply(load_fixture("workflows/scheduled-report-workflow.json"))
    trigger = await kernel.triggers.create(
        "scheduled-report", load_fixture("requests/create-schedule-trigger.json")
    )
    # next weekday morning is Monday 09:00 in Berlin (08:00Z)
    assert trigger["nextFireAt"] == "2026-02-09T08:00:00Z"
    clock.set(datetime(2026, 2, 9, 8, 0, 2, tzinfo=UTC))
    report = await kernel.scheduler.tick()
    assert report.started == 1
    assert await kernel.worker.run_once()
    run = await kernel.service.get_execution(report.executions[0])
    assert run["status"] == "Succeeded"
    assert run["actions"][0]["outputs"]["echo"] == (
        "Daily report for 2026-02-09T09:00:00+01:00 (scheduled 2026-02-09T08:00:00Z)"
    )
