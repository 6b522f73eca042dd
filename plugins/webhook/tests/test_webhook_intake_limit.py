"""Per-trigger intake limits of the webhook (``rateLimit``): 429 with Retry-After, nothing
queued, and forged deliveries use none of the budget. The bucket refills at 0.001 per
second, so within a test it only empties."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from dataworkflows.common.clock import FakeClock
from dataworkflows_webhook import sign

NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
SECRET = "intake-secret"
SLOW = 0.001

WORKFLOW = {
    "id": "limited-intake",
    "displayName": "limited intake",
    "nodes": [{"id": "echo", "actionType": "core.echo", "parameters": {"message": "x"}}],
}


@pytest.fixture
async def kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(clock=FakeClock(NOW))


@pytest.fixture
async def api(api_factory: Any, kernel: Any) -> Any:
    return await api_factory(kernel)


async def trigger_with(api: Any, config: dict[str, Any]) -> Any:
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=WORKFLOW)
    assert resp.status in (201, 409), await resp.text()
    return await api.post(
        f"/api/v1/workflows/{WORKFLOW['id']}/triggers", json={"type": "webhook", "config": config}
    )


async def runs(kernel: Any) -> int:
    async with kernel.db.connect() as conn:
        return int(
            (await conn.execute(text("SELECT count(*) FROM workflow_executions"))).scalar_one()
        )


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    ts = int(NOW.timestamp())
    return {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(ts),
        "X-Signature-256": "sha256=" + sign(secret, body, ts),
    }


async def test_deliveries_over_the_trigger_limit_get_429_and_start_nothing(api, kernel):
    resp = await trigger_with(api, {"rateLimit": {"perSecond": SLOW, "burst": 2}})
    assert resp.status == 201, await resp.text()
    trigger = await resp.json()
    began = time.monotonic()  # the limiter's clock is the real one, not the kernel's
    answers = [
        await api.post(f"/hooks/{trigger['id']}", json={"n": i}, headers={"X-Delivery-Id": f"d{i}"})
        for i in range(3)
    ]
    assert [r.status for r in answers] == [202, 202, 429]
    refused = answers[2]
    # one interval (1000 s) after the bucket emptied, less the time since
    waited = math.ceil(time.monotonic() - began)
    assert math.ceil(1 / SLOW) - waited <= int(refused.headers["Retry-After"]) <= 1 / SLOW
    body = await refused.json()
    assert body["code"] == "rate_limited"
    assert body["details"]["limit"] == {"perSecond": SLOW, "burst": 2}
    assert await runs(kernel) == 2


async def test_forged_deliveries_use_none_of_the_limit(api, kernel):
    config = {"rateLimit": {"perSecond": SLOW, "burst": 1}, "signature": {"secret": SECRET}}
    trigger = await (await trigger_with(api, config)).json()
    body = json.dumps({"m": 1}).encode()
    for _ in range(3):
        forged = await api.post(f"/hooks/{trigger['id']}", data=body, headers=signed(body, "x"))
        assert forged.status == 401
    good = await api.post(f"/hooks/{trigger['id']}", data=body, headers=signed(body))
    assert good.status == 202
    again = await api.post(f"/hooks/{trigger['id']}", data=body, headers=signed(body))
    assert again.status == 429
    assert await runs(kernel) == 1


@pytest.mark.parametrize(
    "limit",
    [
        {"perSecond": 0},
        {"perSecond": -1},
        {"burst": 3},
        {"perSecond": 1, "burst": -1},
        {"perSecond": 1, "x": 1},
    ],
)
async def test_a_bad_rate_limit_config_is_refused(api, kernel, limit):
    resp = await trigger_with(api, {"rateLimit": limit})
    assert resp.status == 422, await resp.text()
    assert "rateLimit" in await resp.text()
    async with kernel.db.connect() as conn:
        assert (
            await conn.execute(text("SELECT count(*) FROM workflow_triggers"))
        ).scalar_one() == 0
