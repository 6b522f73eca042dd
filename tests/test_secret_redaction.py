"""A canary secret never reaches the database, the ledger, events, API responses or logs."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import pytest
from pydantic import BaseModel, ConfigDict

from dataworkflows import Action, ActionContext, ActionResult, ResourceLink, hookimpl
from dataworkflows.credentials import generate_key
from dataworkflows.redaction import REDACTED, Redactor, secret_forms

CANARY = "cAn4ry/S3cr3t+v@lue=&x y"
ENV_CANARY = "env-Canary:7f3a/9+Zz"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(secret: str) -> list[str]:
    """What must never be found: the secret plain, base64- and URL-encoded."""
    return [
        secret,
        b64(secret),
        base64.urlsafe_b64encode(secret.encode()).decode(),
        quote(secret, safe=""),
        quote_plus(secret),
    ]


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        for form in forms(secret):
            assert form not in text, f"{form!r} leaked"


class LeakSecret(Action):
    """Test action doing everything an action should not do with a secret."""

    type = "test.leak-secret"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        credential: str
        mode: Literal["outputs", "fail", "raise", "retriable"] = "outputs"

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        secret = await ctx.credentials.get(params.credential)
        leaks = {
            "plain": secret,
            "base64": b64(secret),
            "urlsafe": base64.urlsafe_b64encode(secret.encode()).decode(),
            "url": f"https://api.test/cb?token={quote(secret, safe='')}&x=1",
            "plus": quote_plus(secret),
            "basic": "Basic " + b64(f"user:{secret}"),
            "json": json.dumps({"token": secret}),
            secret: "a secret as a key",
            "nested": [{"deep": f"Bearer {secret}"}],
        }
        ctx.log.info("calling the API with %s (%s)", secret, leaks["base64"])
        logging.getLogger("some.client").debug(
            "request headers: {'Authorization': 'Bearer %s'}", secret
        )
        if params.mode == "fail":
            return ActionResult.failed(f"the API refused {secret}", code="refused", details=leaks)
        if params.mode == "retriable":
            return ActionResult.retriable(f"try again with {quote(secret, safe='')}", details=leaks)
        if params.mode == "raise":
            try:
                raise ValueError(f"inner failure for {secret}")
            except ValueError as exc:
                raise RuntimeError(f"client exploded with {b64(secret)}") from exc
        return ActionResult.succeeded(
            leaks, links=(ResourceLink("test", "thing", "thing-1", f"https://x.test/?t={secret}"),)
        )


class Plugin:
    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(LeakSecret)

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)


async def database_text(kernel: Any) -> str:
    from dataworkflows.db.schema import metadata

    parts = []
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.exec_driver_sql(f'SELECT * FROM "{table.name}"'):
                for value in row:
                    if isinstance(value, dict | list):
                        parts.append(json.dumps(value, ensure_ascii=False, default=str))
                    else:
                        parts.append(str(value))
    return "\n".join(parts)


def definition(mode: str, credential: str, workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Leaky",
        "nodes": [
            {
                "id": "leak",
                "actionType": "test.leak-secret",
                "parameters": {"credential": credential, "mode": mode},
                "retry": {"maxAttempts": 2, "initialDelay": 0, "jitter": False},
            }
        ],
    }


async def test_canary_never_leaks(api_factory, kernel_factory, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_ENV_CANARY", ENV_CANARY)
    plugin = Plugin()
    kernel = await kernel_factory(plugins=[plugin], secret_key=generate_key())
    api = await api_factory(kernel)
    responses: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        resp = await api.request(method, path, **kwargs)
        responses.append(await resp.text())
        return resp

    resp = await call("POST", "/api/v1/credentials", json={"name": "canary", "secret": CANARY})
    assert resp.status == 201
    runs = []
    for index, (mode, credential) in enumerate(
        [
            ("outputs", "canary"),
            ("fail", "canary"),
            ("raise", "canary"),
            ("retriable", "canary"),
            ("outputs", "env-canary"),
            ("fail", "env-canary"),
        ]
    ):
        workflow = definition(mode, credential, f"leaky-{index}")
        assert (
            await call("POST", "/api/v1/workflows?autoActivate=true", json=workflow)
        ).status == 201
        accepted = await (
            await call("POST", f"/api/v1/workflows/{workflow['id']}/execute", json={})
        ).json()
        await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
        run = await (await call("GET", f"/api/v1/executions/{accepted['executionId']}")).json()
        await call("GET", f"/api/v1/executions/{accepted['executionId']}/events")
        await call("GET", f"/api/v1/executions/{accepted['executionId']}/resources")
        runs.append(run)
    await call("GET", "/api/v1/credentials")
    await call("GET", "/api/v1/credentials/canary")

    # the runs did what they were told, with the secret replaced
    assert [r["status"] for r in runs] == [
        "Succeeded",
        "Failed",
        "Failed",
        "Failed",
        "Succeeded",
        "Failed",
    ]
    outputs = runs[0]["actions"][0]["outputs"]
    assert outputs["plain"] == REDACTED
    assert outputs["url"] == f"https://api.test/cb?token={REDACTED}&x=1"
    assert outputs["nested"] == [{"deep": f"Bearer {REDACTED}"}]
    assert REDACTED in outputs  # the key
    assert runs[1]["error"]["message"] == f"the API refused {REDACTED}"
    assert runs[2]["actions"][0]["error"]["code"] == "unhandled_exception"
    assert [a["status"] for a in runs[3]["actions"]] == ["RetriableFailure", "Failed"]

    everything = "\n".join(
        [
            await database_text(kernel),
            *responses,
            *(json.dumps(e.payload, ensure_ascii=False) for e in plugin.events),
            caplog.text,
            "\n".join(r.getMessage() for r in caplog.records),
        ]
    )
    assert_clean(everything, CANARY, ENV_CANARY)
    assert "client exploded with" in caplog.text  # the traceback was logged, redacted
    assert f"calling the API with {REDACTED}" in caplog.text


def test_every_form_is_recognised():
    redactor = Redactor()
    redactor.add(CANARY)
    text = " | ".join(
        [
            *forms(CANARY),
            b64(f"user:{CANARY}"),
            b64(f"ab:{CANARY}:cd"),
            b64(f"x{CANARY}"),
            quote(CANARY),
            quote(CANARY, safe="").lower(),
            json.dumps(CANARY),
        ]
    )
    cleaned = redactor.redact_text(text)
    assert_clean(cleaned, CANARY)
    for wrapped in (b64(f"user:{CANARY}"), b64(f"ab:{CANARY}:cd"), b64(f"x{CANARY}")):
        assert wrapped not in cleaned
    assert redactor.redact({"a": [CANARY, 1, None], CANARY: True}) == {
        "a": [REDACTED, 1, None],
        REDACTED: True,
    }


def test_short_values_are_not_registered_and_nothing_is_redacted_before():
    redactor = Redactor()
    assert not redactor.active
    assert redactor.redact({"x": "abc"}) == {"x": "abc"}
    redactor.add("abc")
    redactor.add(None)
    assert not redactor.active
    assert all(len(f) >= 4 for f in secret_forms("abcd"))


def test_log_records_are_redacted_whatever_the_logger(caplog):
    from dataworkflows.redaction import install_log_redaction, redactor

    install_log_redaction()
    redactor.add("log-canary-31337")
    log = logging.getLogger("anything.at.all")
    with caplog.at_level(logging.INFO):
        log.info("token=%s", "log-canary-31337")
        try:
            raise KeyError("log-canary-31337")
        except KeyError:
            log.exception("failed")
    assert "log-canary-31337" not in caplog.text
    assert caplog.text.count(REDACTED) >= 2


@pytest.mark.parametrize("secret", ["p@ss:w0rd/+=", "ünïcödé-sécret", "a" * 64])
def test_round_trip_forms(secret):
    redactor = Redactor()
    redactor.add(secret)
    for form in forms(secret):
        assert redactor.redact_text(f"<{form}>") == f"<{REDACTED}>"
