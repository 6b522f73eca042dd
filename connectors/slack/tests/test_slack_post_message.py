"""slack.post-message against a local server speaking Slack's chat.postMessage wire format."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

import dataworkflows_slack
from dataworkflows import ActionContext, Credential, CredentialError, Credentials, StepOutcome
from dataworkflows.secrets.keys import generate_key
from dataworkflows_slack import PostMessage

ROOT = Path(__file__).resolve().parents[3]
KEY = generate_key()


def load(relative: str) -> Any:
    return json.loads((ROOT / "fixtures" / relative).read_text())


async def database_text(kernel: Any) -> str:
    """Every value of every table, as text."""
    from dataworkflows.db.schema import metadata

    parts = []
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            result = await conn.exec_driver_sql(f'SELECT * FROM "{table.name}"')
            for row in result:
                for value in row:
                    parts.append(
                        json.dumps(value, default=str)
                        if isinstance(value, dict | list)
                        else str(value)
                    )
    return "\n".join(parts)


def canary_forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode(), quote(secret, safe="")]


async def slack_kernel(
    kernel_factory: Any, fake: Any, *, tenant: str = "default", token: str | None = None
) -> Any:
    kernel = await kernel_factory(
        plugins=[dataworkflows_slack],
        entrypoints=False,
        secret_key=KEY,
        extra={"slack_base_url": fake.base_url},
    )
    await kernel.credentials.store.put(tenant, "slack", token or fake.token)
    return kernel


async def run_in(
    kernel: Any, definition: dict[str, Any], trigger: dict[str, Any], tenant: str = "default"
) -> dict[str, Any]:
    definition = {**definition, "id": f"{definition['id']}-{tenant}"}  # ids are global
    await kernel.service.apply(definition, tenant_id=tenant)
    summary, _ = await kernel.service.execute(definition["id"], trigger=trigger, tenant_id=tenant)
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
    return dict(await kernel.service.get_execution(summary["executionId"]))


def post_definition(**parameters: Any) -> dict[str, Any]:
    return {
        "id": "slack-test",
        "displayName": "Slack test",
        "nodes": [
            {
                "id": "post",
                "actionType": "slack.post-message",
                "parameters": {"channel": "#general", "text": "hello", **parameters},
                "retry": {"maxAttempts": 3, "initialDelay": 0, "jitter": False},
            }
        ],
    }


async def test_fixture_workflow_posts_and_links_the_message(
    kernel_factory, api_factory, fake_slack
):
    kernel = await slack_kernel(kernel_factory, fake_slack)
    api = await api_factory(kernel)
    definition = load("workflows/slack-post-message.json")
    request = load("requests/slack-post-message-trigger.json")
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=definition)).status == 201
    accepted = await (
        await api.post(f"/api/v1/workflows/{definition['id']}/execute", json=request)
    ).json()
    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    run = await (await api.get(f"/api/v1/executions/{accepted['executionId']}")).json()
    assert run["status"] == "Succeeded", run
    outputs = run["actions"][0]["outputs"]
    assert outputs["channel"] == "C0123ABCD"
    assert outputs["ts"] == fake_slack.messages[0]["ts"]
    assert outputs["text"] == request["trigger"]["text"]

    call = fake_slack.calls[0]
    assert call["headers"]["Authorization"] == f"Bearer {fake_slack.token}"
    assert call["headers"]["Content-Type"].startswith("application/json")
    assert call["payload"] == {"channel": "#general", "text": request["trigger"]["text"]}

    resources = await (
        await api.get(f"/api/v1/executions/{accepted['executionId']}/resources")
    ).json()
    assert [(r["system"], r["type"], r["externalId"], r["nodeId"]) for r in resources["items"]] == [
        ("slack", "message", f"C0123ABCD:{outputs['ts']}", "post")
    ]
    dump = await database_text(kernel)
    for form in canary_forms(fake_slack.token):
        assert form not in dump


async def test_blocks_and_thread_replies(kernel_factory, run_workflow, fake_slack):
    kernel = await slack_kernel(kernel_factory, fake_slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]
    run = await run_workflow(
        kernel,
        post_definition(
            channel="C0456EFGH", text="fallback", blocks=blocks, threadTs="1700000000.000001"
        ),
    )
    assert run["status"] == "Succeeded", run
    assert fake_slack.calls[0]["payload"]["blocks"] == blocks
    assert fake_slack.calls[0]["payload"]["thread_ts"] == "1700000000.000001"
    assert run["actions"][0]["outputs"]["threadTs"] == "1700000000.000001"


@pytest.mark.parametrize(
    ("setup", "parameters", "code"),
    [
        ("wrong-token", {}, "slack_invalid_auth"),
        (None, {"channel": "#nowhere"}, "slack_channel_not_found"),
        ("missing-scope", {}, "slack_missing_scope"),
        ("not-in-channel", {}, "slack_not_in_channel"),
    ],
)
async def test_permanent_errors_fail_without_retrying(
    kernel_factory, run_workflow, fake_slack, setup, parameters, code
):
    kernel = await slack_kernel(
        kernel_factory, fake_slack, token="xoxb-wrong-token-000" if setup == "wrong-token" else None
    )
    if setup == "missing-scope":
        fake_slack.fail_next("missing_scope", needed="chat:write", provided="channels:read")
    if setup == "not-in-channel":
        fake_slack.fail_next("not_in_channel")
    run = await run_workflow(kernel, post_definition(**parameters))
    assert run["status"] == "Failed"
    assert [(a["status"], a["error"]["code"]) for a in run["actions"]] == [("Failed", code)]
    assert len(fake_slack.calls) == 1
    if setup == "missing-scope":
        assert run["actions"][0]["error"]["details"]["needed"] == "chat:write"


async def test_rate_limit_is_retried_after_the_wait_slack_asks_for(
    kernel_factory, run_workflow, fake_slack
):
    kernel = await slack_kernel(kernel_factory, fake_slack)
    fake_slack.rate_limit_next(retry_after=0)
    fake_slack.fail_next("internal_error")
    run = await run_workflow(kernel, post_definition())
    assert run["status"] == "Succeeded", run
    assert [
        (a["attempt"], a["status"], (a["error"] or {}).get("code")) for a in run["actions"]
    ] == [
        (1, "RetriableFailure", "slack_ratelimited"),
        (2, "RetriableFailure", "slack_internal_error"),
        (3, "Succeeded", None),
    ]
    assert len(fake_slack.messages) == 1


class OneCredential(Credentials):
    def __init__(self, token: str) -> None:
        self.token = token

    async def fetch(self, name: str) -> Credential:
        if name != "slack":
            raise CredentialError(f"no credential named {name!r}")
        return Credential(name, self.token)


async def _direct(fake: Any, token: str, **parameters: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        ctx = ActionContext(
            execution_id="e",
            workflow_id="w",
            workflow_version=1,
            node_id="post",
            attempt=1,
            idempotency_key="e:post",
            trigger={},
            http=session,
            log=logging.LoggerAdapter(logging.getLogger("test.slack"), {}),
            cancelled=asyncio.Event(),
            credentials=OneCredential(token),
            settings={"slack_base_url": fake.base_url},
        )
        params = PostMessage.Params.model_validate(
            {"channel": "#general", "text": "hi", **parameters}
        )
        return await PostMessage().run(ctx, params)


@pytest.mark.parametrize(
    ("queue", "code", "retry_after"),
    [
        (("rate", 3), "slack_ratelimited", 3.0),
        (("error", "ratelimited", 200), "slack_ratelimited", None),
        (("error", "service_unavailable", 200), "slack_service_unavailable", None),
        (("error", "fatal_error", 500), "slack_fatal_error", None),
        (("error", "oops", 503), "slack_oops", None),
    ],
)
async def test_transient_errors_are_retriable(fake_slack, queue, code, retry_after):
    if queue[0] == "rate":
        fake_slack.rate_limit_next(retry_after=queue[1])
    else:
        fake_slack.fail_next(queue[1], status=queue[2])
    result = await _direct(fake_slack, fake_slack.token)
    assert result.outcome is StepOutcome.RETRIABLE
    assert result.error["code"] == code
    assert result.retry_after == retry_after


async def test_unknown_errors_are_permanent_and_unreachable_slack_is_retriable(fake_slack):
    fake_slack.fail_next("something_new")
    result = await _direct(fake_slack, fake_slack.token)
    assert result.outcome is StepOutcome.FAILED
    assert result.error["code"] == "slack_something_new"
    url = fake_slack.base_url
    await fake_slack.server.close()
    result = await _direct(type("F", (), {"base_url": url})(), "xoxb-token-1234")
    assert result.outcome is StepOutcome.RETRIABLE
    assert result.error["code"] == "connection_error"


def test_text_or_blocks_is_required():
    with pytest.raises(ValueError, match="text, blocks or both"):
        PostMessage.Params.model_validate({"channel": "#general"})


async def test_another_tenants_token_is_never_used(kernel_factory, fake_slack):
    kernel = await slack_kernel(kernel_factory, fake_slack, tenant="tenant-b")
    run = await run_in(kernel, post_definition(), {}, tenant="tenant-a")
    assert run["status"] == "Failed"
    assert run["actions"][0]["error"]["code"] == "credential_not_found"
    assert "tenant-a" in run["actions"][0]["error"]["message"]
    assert fake_slack.calls == []
    # the owner can use it
    run_b = await run_in(kernel, post_definition(), {}, tenant="tenant-b")
    assert run_b["status"] == "Succeeded"
    assert len(fake_slack.calls) == 1


async def test_a_token_is_only_sent_to_its_allowed_hosts(kernel_factory, run_workflow, fake_slack):
    kernel = await slack_kernel(kernel_factory, fake_slack)
    await kernel.credentials.store.put(
        "default", "slack", fake_slack.token, allowed_hosts=["slack.com"]
    )
    run = await run_workflow(kernel, post_definition())
    assert run["actions"][0]["error"]["code"] == "credential_host_not_allowed"
    assert fake_slack.calls == []
