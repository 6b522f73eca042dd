"""The webhook trigger over real HTTP (aiohttp on 127.0.0.1), on every backend."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text

from dataworkflows.common.clock import FakeClock
from dataworkflows.db.models import workflow_executions
from dataworkflows_webhook import Webhook, sign

SECRET = "s3cr3t-shared-with-the-sender"
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)

WORKFLOW = {
    "id": "on-webhook",
    "displayName": "Echo what a webhook delivered",
    "nodes": [
        {
            "id": "greet",
            "actionType": "core.echo",
            "parameters": {
                "message": {
                    "text": "{{ trigger.body.message }}",
                    "from": "{{ trigger.headers['x-sender'] }}",
                    "channel": "{{ trigger.query.channel }}",
                }
            },
        }
    ],
}


def echo_definition(workflow_id: str, message: Any = "{{ trigger.body.message }}") -> dict:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [{"id": "echo", "actionType": "core.echo", "parameters": {"message": message}}],
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def kernel(kernel_factory: Any, clock: FakeClock) -> Any:
    return await kernel_factory(clock=clock)


@pytest.fixture
async def api(api_factory: Any, kernel: Any) -> Any:
    return await api_factory(kernel)


async def make_trigger(
    api: Any, definition: dict[str, Any], config: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=definition)
    assert resp.status in (201, 409), await resp.text()
    body = {"type": "webhook", "config": config or {}, **extra}
    resp = await api.post(f"/api/v1/workflows/{definition['id']}/triggers", json=body)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def signed_headers(
    body: bytes, *, secret: str = SECRET, timestamp: int | None = None, **extra: str
) -> dict[str, str]:
    ts = int(NOW.timestamp()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(ts),
        "X-Signature-256": "sha256=" + sign(secret, body, ts),
        **extra,
    }


async def count_runs(kernel: Any, workflow_id: str) -> int:
    async with kernel.db.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM workflow_executions WHERE workflow_id = :w"),
                    {"w": workflow_id},
                )
            ).scalar_one()
        )


def test_hook_register_triggers_webhook_registers_the_type(kernel: Any) -> None:
    entry = kernel.plugins.triggers["webhook"]
    assert entry.cls is Webhook
    assert entry.plugin.distribution == "dataworkflows-webhook"
    assert not Webhook.time_based


async def test_hook_register_routes_webhook_call_starts_a_run_that_succeeds(
    api: Any, kernel: Any
) -> None:
    trigger = await make_trigger(api, WORKFLOW)
    assert trigger["info"] == {"path": f"/hooks/{trigger['id']}", "method": "POST"}
    resp = await api.post(
        f"/hooks/{trigger['id']}?channel=general",
        json={"message": "hello"},
        headers={"X-Sender": "ci", "Authorization": "Bearer do-not-store"},
    )
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    assert accepted["activated"] is True and accepted["duplicate"] is False
    assert resp.headers["Location"] == accepted["statusUrl"]

    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    run = await (await api.get(accepted["statusUrl"])).json()
    assert run["status"] == "Succeeded", run
    rendered = {"text": "hello", "from": "ci", "channel": "general"}
    assert run["actions"][0]["parameters"] == {"message": rendered}
    assert run["actions"][0]["outputs"] == {"echo": rendered}

    payload = run["trigger"]
    assert payload["body"] == {"message": "hello"}
    assert payload["query"] == {"channel": "general"}
    assert payload["headers"]["x-sender"] == "ci"
    assert "authorization" not in payload["headers"]
    assert payload["method"] == "POST"
    assert payload["path"] == f"/hooks/{trigger['id']}"
    assert payload["contentType"] == "application/json"
    assert payload["triggerId"] == trigger["id"]
    assert payload["triggerType"] == "webhook"
    assert payload["receivedAt"] == "2026-05-04T10:00:00Z"

    view = await (await api.get(f"/api/v1/workflows/on-webhook/triggers/{trigger['id']}")).json()
    assert view["stats"]["runs"] == 1
    assert view["lastExecution"]["executionId"] == accepted["executionId"]


async def test_signatures_only_the_valid_one_passes(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(api, echo_definition("signed"), {"signature": {"secret": SECRET}})
    # the secret never comes back from the API
    assert trigger["config"]["signature"]["secret"] == "**********"
    url = f"/hooks/{trigger['id']}"
    body = json.dumps({"message": "pay 10"}).encode()

    cases = {
        "valid": (body, signed_headers(body)),
        "tampered body": (
            json.dumps({"message": "pay 1000"}).encode(),
            signed_headers(body),
        ),
        "wrong secret": (body, signed_headers(body, secret="not-the-secret")),
        "stale timestamp": (
            body,
            signed_headers(body, timestamp=int(NOW.timestamp()) - 301),
        ),
        "missing header": (
            body,
            {k: v for k, v in signed_headers(body).items() if k != "X-Signature-256"},
        ),
    }
    statuses = {}
    codes = {}
    for name, (data, headers) in cases.items():
        resp = await api.post(url, data=data, headers=headers)
        statuses[name] = resp.status
        codes[name] = (await resp.json()).get("code")
    assert statuses == {
        "valid": 202,
        "tampered body": 401,
        "wrong secret": 401,
        "stale timestamp": 401,
        "missing header": 401,
    }
    assert codes["tampered body"] == codes["wrong secret"] == "invalid_signature"
    assert codes["stale timestamp"] == "stale_timestamp"
    assert codes["missing header"] == "missing_signature"
    assert await count_runs(kernel, "signed") == 1


async def test_signature_without_timestamp_and_with_a_named_credential(
    api: Any, kernel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_HOOK_SECRET", SECRET)
    config = {
        "signature": {
            "secretName": "hook-secret",
            "header": "X-Hub-Signature-256",
            "timestampHeader": None,
        }
    }
    trigger = await make_trigger(api, echo_definition("signed-by-name"), config)
    body = b'{"message": "hi"}'
    ok = await api.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + sign(SECRET, body),
        },
    )
    assert ok.status == 202, await ok.text()
    bad = await api.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=00"},
    )
    assert bad.status == 401


async def test_named_credential_that_is_missing_is_a_503_shown_as_last_error(api: Any) -> None:
    config = {"signature": {"secretName": "no-such-credential-anywhere"}}
    trigger = await make_trigger(api, echo_definition("unsigned-secret"), config)
    assert trigger["lastError"] is None
    # reported as soon as it is created, not first by a failing delivery
    assert trigger["status"] == "secretMissing"
    assert [p["code"] for p in trigger["problems"]] == ["secret_missing"]
    assert "no-such-credential-anywhere" in trigger["problems"][0]["message"]
    resp = await api.post(f"/hooks/{trigger['id']}", json={"message": "x"})
    assert resp.status == 503  # the trigger's set-up, not the sender, is at fault
    body = await resp.json()
    assert body["code"] == "signature_secret_missing"
    assert "dataworkflows credentials set" in body["message"]
    view = await (
        await api.get(f"/api/v1/workflows/unsigned-secret/triggers/{trigger['id']}")
    ).json()
    assert view["lastError"]["code"] == "signature_secret_missing"
    # once the credential exists the trigger is ready
    resp = await api.post(
        "/api/v1/credentials", json={"name": "no-such-credential-anywhere", "secret": SECRET}
    )
    assert resp.status == 201, await resp.text()
    view = await (
        await api.get(f"/api/v1/workflows/unsigned-secret/triggers/{trigger['id']}")
    ).json()
    assert (view["status"], view["problems"]) == ("enabled", [])


async def test_same_delivery_id_five_times_starts_one_run(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(api, echo_definition("dedup"))
    answers = []
    for _ in range(5):
        resp = await api.post(
            f"/hooks/{trigger['id']}",
            json={"message": "once"},
            headers={"X-Delivery-Id": "delivery-7f3a"},
        )
        assert resp.status == 202
        answers.append(await resp.json())
    assert len({a["executionId"] for a in answers}) == 1
    assert [a["duplicate"] for a in answers] == [False, True, True, True, True]
    assert await count_runs(kernel, "dedup") == 1
    # another delivery id is another run
    resp = await api.post(
        f"/hooks/{trigger['id']}", json={"message": "twice"}, headers={"X-Delivery-Id": "d-2"}
    )
    assert (await resp.json())["executionId"] != answers[0]["executionId"]
    assert await count_runs(kernel, "dedup") == 2


async def test_custom_delivery_header_and_long_ids(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(
        api, echo_definition("gh"), {"deliveryIdHeader": "X-GitHub-Delivery"}
    )
    long_id = "x" * 500
    first = await api.post(
        f"/hooks/{trigger['id']}", json={"message": 1}, headers={"X-GitHub-Delivery": long_id}
    )
    second = await api.post(
        f"/hooks/{trigger['id']}", json={"message": 1}, headers={"X-GitHub-Delivery": long_id}
    )
    assert first.status == second.status == 202
    assert (await first.json())["executionId"] == (await second.json())["executionId"]
    # without the header every call is a new delivery
    await api.post(f"/hooks/{trigger['id']}", json={"message": 2})
    await api.post(f"/hooks/{trigger['id']}", json={"message": 2})
    assert await count_runs(kernel, "gh") == 3


async def test_ten_megabytes_against_the_one_megabyte_limit_is_413(api: Any, kernel: Any) -> None:
    assert kernel.settings.max_body_bytes == 1024 * 1024
    trigger = await make_trigger(api, echo_definition("big"))
    big = b'{"message": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    resp = await api.post(
        f"/hooks/{trigger['id']}", data=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    body = await resp.json()
    assert body["code"] == "payload_too_large"
    assert body["details"] == {"maxBytes": 1024 * 1024}
    assert await count_runs(kernel, "big") == 0


async def test_per_trigger_limit_also_for_chunked_bodies(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(api, echo_definition("small"), {"maxBodyBytes": 64})

    async def chunks() -> Any:
        yield b'{"message": "'
        for _ in range(10):
            yield b"b" * 32
        yield b'"}'

    resp = await api.post(
        f"/hooks/{trigger['id']}", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await resp.json())["details"] == {"maxBytes": 64}
    ok = await api.post(f"/hooks/{trigger['id']}", json={"message": "fits"})
    assert ok.status == 202
    assert await count_runs(kernel, "small") == 1


async def test_bad_bodies_are_415_or_400_and_start_nothing(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(api, echo_definition("bodies", "{{ trigger.body }}"))
    url = f"/hooks/{trigger['id']}"
    resp = await api.post(url, data=b"\x00\x01", headers={"Content-Type": "application/pdf"})
    assert resp.status == 415
    assert (await resp.json())["code"] == "unsupported_media_type"
    resp = await api.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["code"] == "malformed_body"
    resp = await api.post(url, data=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert resp.status == 400
    assert await count_runs(kernel, "bodies") == 0

    form = await api.post(
        url,
        data=b"a=1&b=2&b=3",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    text_body = await api.post(url, data=b"plain words", headers={"Content-Type": "text/plain"})
    empty = await api.post(url)
    vendor = await api.post(
        url, data=b'{"x": 1}', headers={"Content-Type": "application/vnd.api+json"}
    )
    payloads = []
    for resp in (form, text_body, empty, vendor):
        assert resp.status == 202, await resp.text()
        run_id = (await resp.json())["executionId"]
        payloads.append((await kernel.service.get_execution(run_id))["trigger"]["body"])
    assert payloads == [{"a": "1", "b": ["2", "3"]}, "plain words", None, {"x": 1}]


async def test_unknown_disabled_or_other_type_triggers_are_404(api: Any, kernel: Any) -> None:
    assert (await api.post(f"/hooks/{uuid.uuid4()}", json={})).status == 404
    assert (await api.post("/hooks/not-even-a-uuid", json={})).status == 404
    trigger = await make_trigger(api, echo_definition("switchable"))
    await api.post(f"/api/v1/workflows/switchable/triggers/{trigger['id']}/disable")
    resp = await api.post(f"/hooks/{trigger['id']}", json={"message": "x"})
    assert resp.status == 404
    assert (await resp.json())["code"] == "trigger_not_found"
    await api.post(f"/api/v1/workflows/switchable/triggers/{trigger['id']}/enable")
    assert (await api.post(f"/hooks/{trigger['id']}", json={"message": "x"})).status == 202

    schedule = await api.post(
        "/api/v1/workflows/switchable/triggers",
        json={"type": "schedule", "config": {"cron": "0 0 * * *"}},
    )
    schedule_id = (await schedule.json())["id"]
    assert (await api.post(f"/hooks/{schedule_id}", json={})).status == 404
    assert (await api.get(f"/hooks/{trigger['id']}")).status == 405


async def test_inactive_workflow_is_409(api: Any, kernel: Any) -> None:
    definition = echo_definition("draft-only")
    assert (await api.post("/api/v1/workflows", json=definition)).status == 201
    resp = await api.post(
        "/api/v1/workflows/draft-only/triggers", json={"type": "webhook", "config": {}}
    )
    trigger = await resp.json()
    resp = await api.post(f"/hooks/{trigger['id']}", json={"message": "x"})
    assert resp.status == 409
    assert (await resp.json())["code"] == "workflow_not_active"
    assert await count_runs(kernel, "draft-only") == 0


async def test_activation_condition_counts_non_activations(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(
        api,
        echo_definition("only-opened"),
        activationCondition="trigger.body.action == 'opened' and trigger.query.env != 'test'",
    )
    url = f"/hooks/{trigger['id']}"
    resp = await api.post(url, json={"action": "closed", "message": "no"})
    assert resp.status == 200
    assert await resp.json() == {"activated": False, "reason": "notActivated"}
    resp = await api.post(url + "?env=test", json={"action": "opened", "message": "no"})
    assert resp.status == 200
    resp = await api.post(url + "?env=prod", json={"action": "opened", "message": "yes"})
    assert resp.status == 202
    # a condition that cannot be evaluated starts nothing and is counted apart
    resp = await api.post(url, json={"action": "opened", "message": "no query"})
    assert resp.status == 200
    # the sender learns that nothing started, never the expression or Jinja's words
    assert await resp.json() == {"activated": False, "reason": "conditionError"}

    view = await (await api.get(f"/api/v1/workflows/only-opened/triggers/{trigger['id']}")).json()
    assert view["stats"] == {"runs": 1, "notActivated": 2, "conditionErrors": 1, "skipped": 0}
    assert view["lastError"]["code"] == "condition_error"
    # the owner does, in their terms, with the way to allow a missing key
    assert "there is no key 'env' here" in view["lastError"]["message"]
    assert ".get('env')" in view["lastError"]["message"]
    assert "dict object" not in view["lastError"]["message"]
    # written so, a missing key is simply false
    resp = await api.patch(
        f"/api/v1/workflows/only-opened/triggers/{trigger['id']}",
        json={"activationCondition": "trigger.query.get('env') == 'prod'"},
    )
    assert resp.status == 200, await resp.text()
    resp = await api.post(url, json={"action": "opened", "message": "no query"})
    assert await resp.json() == {"activated": False, "reason": "notActivated"}
    assert view["lastEventAt"] == "2026-05-04T10:00:00Z"
    assert await count_runs(kernel, "only-opened") == 1


async def test_payload_data_is_never_template_source(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(
        api, echo_definition("inert"), activationCondition="trigger.body.message"
    )
    evil = "{{ 7 * 7 }}{% for x in range(3) %}{{ x }}{% endfor %}{{ ''.__class__ }}"
    resp = await api.post(f"/hooks/{trigger['id']}", json={"message": evil})
    assert resp.status == 202
    run_id = (await resp.json())["executionId"]
    await kernel.ledger.wait_until_final(uuid.UUID(run_id), 30)
    run = await kernel.service.get_execution(run_id)
    assert run["status"] == "Succeeded"
    assert run["actions"][0]["outputs"]["echo"] == evil


async def test_answers_202_before_the_run_finishes(api: Any, kernel: Any) -> None:
    # the run takes a while (a real 1 s delay in the action); the answer does not wait
    definition = echo_definition("slow")
    definition["nodes"][0]["parameters"]["delayMs"] = 1000
    trigger = await make_trigger(api, definition)
    resp = await api.post(f"/hooks/{trigger['id']}", json={"message": "later"})
    assert resp.status == 202
    run_id = (await resp.json())["executionId"]
    # durably recorded: a fresh connection sees the row, and the run is not final yet
    t = workflow_executions
    async with kernel.db.connect() as conn:
        status = (
            await conn.execute(select(t.c.status).where(t.c.id == uuid.UUID(run_id)))
        ).scalar_one()
    assert status in ("Pending", "Running")
    assert await kernel.ledger.wait_until_final(uuid.UUID(run_id), 30) == "Succeeded"


async def test_failed_insert_is_a_5xx_and_records_nothing(api: Any, kernel: Any) -> None:
    trigger = await make_trigger(api, echo_definition("broken"))
    # break the ledger's foreign key: the published version's definition row is gone
    async with kernel.db.begin() as conn:
        await conn.execute(text("DELETE FROM workflow_definitions WHERE workflow_id = 'broken'"))
    resp = await api.post(f"/hooks/{trigger['id']}", json={"message": "x"})
    assert resp.status >= 500
    assert await count_runs(kernel, "broken") == 0
