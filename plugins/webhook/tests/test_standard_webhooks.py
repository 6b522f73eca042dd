"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature) over
real HTTP: the delivery id is signed, so a captured delivery cannot start a second run."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dataworkflows.common.clock import FakeClock
from dataworkflows_webhook import sign_standard

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"an older key, being rotated out").decode()
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
DEFINITION = {
    "id": "standard",
    "displayName": "Standard Webhooks",
    "nodes": [
        {
            "id": "echo",
            "actionType": "core.echo",
            "parameters": {"message": "{{ trigger.body.message }}"},
        }
    ],
}


@pytest.fixture
async def api(kernel_factory: Any, api_factory: Any) -> Any:
    return await api_factory(await kernel_factory(clock=FakeClock(NOW)))


async def _trigger(api: Any, secret: str = SECRET) -> str:
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=DEFINITION)
    assert resp.status in (201, 409)
    config = {"signature": {"scheme": "standard-webhooks", "secret": secret}}
    resp = await api.post(
        "/api/v1/workflows/standard/triggers", json={"type": "webhook", "config": config}
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


def _headers(delivery_id: str, body: bytes, *, ts: int = TS, signature: str | None = None):
    return {
        "Content-Type": "application/json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature or sign_standard(SECRET, delivery_id, ts, body),
    }


async def test_a_signed_delivery_starts_one_run_and_a_replay_under_a_new_id_is_refused(api):
    trigger_id = await _trigger(api)
    body = json.dumps({"message": "hello"}).encode()
    first = await api.post(f"/hooks/{trigger_id}", data=body, headers=_headers("msg_1", body))
    assert first.status == 202, await first.text()
    run = (await first.json())["executionId"]
    again = await api.post(f"/hooks/{trigger_id}", data=body, headers=_headers("msg_1", body))
    assert again.status == 202
    assert (await again.json()) == {
        "executionId": run,
        "statusUrl": f"/api/v1/executions/{run}",
        "activated": True,
        "duplicate": True,
    }
    # the same body and signature under another webhook-id: the id is signed, so refused
    replay = _headers("msg_2", body, signature=_headers("msg_1", body)["webhook-signature"])
    refused = await api.post(f"/hooks/{trigger_id}", data=body, headers=replay)
    assert refused.status == 401
    assert (await refused.json())["code"] == "invalid_signature"
    runs = await (await api.get("/api/v1/executions?workflowId=standard")).json()
    assert [r["id"] for r in runs["items"]] == [run]
    view = await (await api.get(f"/api/v1/executions/{run}")).json()
    assert view["trigger"]["deliveryId"] == "msg_1"


async def test_rotation_stale_timestamps_and_missing_headers(api):
    trigger_id = await _trigger(api)
    body = b'{"message": "rotating"}'
    both = " ".join(
        [sign_standard(OLD_SECRET, "msg_r", TS, body), sign_standard(SECRET, "msg_r", TS, body)]
    )
    ok = await api.post(
        f"/hooks/{trigger_id}", data=body, headers=_headers("msg_r", body, signature=both)
    )
    assert ok.status == 202, await ok.text()
    only_old = sign_standard(OLD_SECRET, "msg_o", TS, body)
    bad = await api.post(
        f"/hooks/{trigger_id}", data=body, headers=_headers("msg_o", body, signature=only_old)
    )
    assert bad.status == 401 and (await bad.json())["code"] == "invalid_signature"
    stale = await api.post(
        f"/hooks/{trigger_id}", data=body, headers=_headers("msg_s", body, ts=TS - 301)
    )
    assert stale.status == 401 and (await stale.json())["code"] == "stale_timestamp"
    missing = await api.post(
        f"/hooks/{trigger_id}", data=body, headers={"Content-Type": "application/json"}
    )
    assert missing.status == 401
    assert (await missing.json())["details"] == {
        "headers": ["webhook-id", "webhook-timestamp", "webhook-signature"]
    }


async def test_a_secret_that_is_not_whsec_base64_is_refused_at_creation(api):
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=DEFINITION)
    assert resp.status == 201
    config = {"signature": {"scheme": "standard-webhooks", "secret": "not base64!"}}
    resp = await api.post(
        "/api/v1/workflows/standard/triggers", json={"type": "webhook", "config": config}
    )
    assert resp.status == 422
    assert "whsec_" in json.dumps(await resp.json())
