"""A canary secret never reaches the database, the ledger, events, API responses or logs."""

from __future__ import annotations

import base64
import gc
import json
import logging
import random
import re
import string
import uuid
import weakref
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import pytest
from pydantic import BaseModel, ConfigDict

from dataworkflows import Action, ActionContext, ActionResult, ResourceLink, hookimpl
from dataworkflows.common.redaction import REDACTED, Redactor, secret_forms
from dataworkflows.secrets.keys import generate_key

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
    from dataworkflows.common.log_redaction import install_log_redaction
    from dataworkflows.common.redaction import redactor

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


# -- one redactor per kernel, tenants, scale ---------------------------------------------


async def test_each_kernel_owns_its_redactor_and_logs_redact_every_live_one(
    kernel_factory, run_workflow, tmp_path, monkeypatch, caplog
):
    from dataworkflows.common.log_redaction import live_redactors
    from dataworkflows.common.redaction import redactor as process_redactor

    secret_a, secret_b = "kernel-A-s3cret/value", "kernel-B-s3cret+value"
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_ONLY_A", secret_a)
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_ONLY_B", secret_b)
    kernel_a = await kernel_factory(plugins=[Plugin()])
    # its own database, so that neither kernel's worker can claim the other's runs
    kernel_b = await kernel_factory(
        plugins=[Plugin()], database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    )
    assert kernel_a.redactor is not kernel_b.redactor
    assert {id(kernel_a.redactor), id(kernel_b.redactor)} <= {id(r) for r in live_redactors()}

    run_a = await run_workflow(kernel_a, definition("outputs", "only-a", "leaky-a"))
    run_b = await run_workflow(kernel_b, definition("outputs", "only-b", "leaky-b"))
    for run in (run_a, run_b):
        assert run["status"] == "Succeeded"
        outputs = run["actions"][0]["outputs"]
        assert outputs["plain"] == REDACTED
        assert REDACTED in outputs["basic"]  # the base64 of "user:<secret>"
    assert_clean(await database_text(kernel_a), secret_a)
    assert_clean(await database_text(kernel_b), secret_b)

    # each kernel knows its own secrets only; nothing went to the process-wide fallback
    assert kernel_a.redactor.redact_text(secret_a) == REDACTED
    assert kernel_a.redactor.redact_text(secret_b) == secret_b
    assert kernel_b.redactor.redact_text(secret_a) == secret_a
    assert process_redactor.redact_text(secret_a) == secret_a

    # logging is process-wide: a record anywhere loses both kernels' secrets
    with caplog.at_level(logging.INFO):
        logging.getLogger("unrelated.library").info("a=%s b=%s", secret_a, b64(secret_b))
    assert secret_a not in caplog.text and b64(secret_b) not in caplog.text
    assert f"a={REDACTED} b={REDACTED}" in caplog.text


async def test_a_tenants_secret_is_redacted_in_every_tenants_runs(kernel_factory, monkeypatch):
    secret = "acme-0nly-t0ken/xyz"
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_ACME_TOKEN", secret)
    kernel = await kernel_factory(plugins=[Plugin()])
    # handed to tenant acme, by each path that hands secrets out
    assert (await kernel.credentials.resolve("acme", "acme-token")).secret == secret
    assert await kernel.plugin_api.resolve_secret("acme-token", "acme") == secret
    kernel.credentials.for_tenant("acme").mark_secret("acme-derived-signature")
    assert kernel.redactor.count("acme") == 2
    assert kernel.redactor.count("globex") == 0

    # tenant globex's run carries it (in its trigger): redacted from globex's ledger too
    workflow = {
        "id": "echo-text",
        "displayName": "Echo",
        "nodes": [
            {
                "id": "echo",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.value }}"},
            }
        ],
    }
    await kernel.service.apply(workflow, tenant_id="globex")
    summary, _ = await kernel.service.execute(
        "echo-text",
        trigger={"value": f"got {quote(secret, safe='')} and acme-derived-signature"},
        tenant_id="globex",
    )
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
    run = await kernel.service.get_execution(summary["executionId"], tenant_id="globex")
    step = run["actions"][0]
    assert step["outputs"] == {"echo": f"got {REDACTED} and {REDACTED}"}
    assert step["parameters"]["message"] == f"got {REDACTED} and {REDACTED}"


def many_secrets(count: int) -> list[str]:
    rng = random.Random(13)
    alphabet = string.ascii_letters + string.digits + "-_/+=:@ "
    found: dict[str, None] = {}
    while len(found) < count:
        found["".join(rng.choice(alphabet) for _ in range(rng.randint(16, 40)))] = None
    return list(found)


def every_form(secret: str) -> list[str]:
    return [
        *forms(secret),
        b64(f"user:{secret}"),
        b64(f"x{secret}"),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
        json.dumps(secret)[1:-1],
    ]


def test_ten_thousand_secrets_still_redact_every_form():
    secrets = many_secrets(10_000)
    redactor = Redactor()
    redactor.add_all(secrets, "default")
    sample = [*secrets[::97], secrets[-1]]
    # at once (merges may still be running) and once the background merges are done
    for _ in ("before", "after"):
        every = " | ".join(secrets)
        assert redactor.redact_text(every) == " | ".join([REDACTED] * len(secrets))
        for secret in sample:
            for form in every_form(secret):
                cleaned = redactor.redact_text(f"<{form}>")
                assert_clean(cleaned, secret)
                assert form not in cleaned
        assert redactor.redact_text("nothing secret here") == "nothing secret here"
        assert redactor.wait_idle(timeout=120)
    assert redactor.count() == 10_000
    assert redactor.merges > 0
    # merged into a few automata (geometric levels), not one per batch of 8 (1,250): at most
    # two levels near MAX_LEVEL (each at least half full) plus a geometric tail of smaller
    # ones (growth 4) and the newest batch; the exact count depends on when merges ran
    assert redactor.shard_count <= 8


def test_a_secret_is_redacted_as_soon_as_it_is_added_while_merges_run():
    redactor = Redactor(seal_every=2, growth=2, max_level=64)
    secrets = many_secrets(300)
    for index, secret in enumerate(secrets):
        redactor.add(secret)
        assert redactor.redact_text(f"<{secret}>") == f"<{REDACTED}>"
        assert redactor.redact_text(b64(f"user:{secret}")) != b64(f"user:{secret}")
        if index % 25 == 0:
            every = " | ".join(secrets[: index + 1])
            assert redactor.redact_text(every) == " | ".join([REDACTED] * (index + 1))
    assert redactor.wait_idle(timeout=60)
    assert redactor.merges > 0
    # a few automata, not one per sealed pair (150): a level stops growing once the next
    # batch would take it past max_level, so levels are at least half full (at most 2 * 300 / 64),
    # plus a geometric tail of smaller ones; the exact count depends on when merges ran
    assert redactor.shard_count <= 2 * (300 // 64) + 8
    assert redactor.redact_text(" | ".join(secrets)) == " | ".join([REDACTED] * 300)


def test_overlapping_forms_are_redacted_whole():
    redactor = Redactor()
    redactor.add("abcdefgh")
    redactor.add("efghijkl")
    assert redactor.redact_text("xx abcdefghijkl yy") == f"xx {REDACTED} yy"
    assert redactor.redact_text("abcdefghabcdefgh") == REDACTED + REDACTED


def test_the_log_registry_holds_redactors_weakly(caplog):
    from dataworkflows.common.log_redaction import install_log_redaction, live_redactors

    redactor = Redactor()
    install_log_redaction(redactor)
    redactor.add("weakly-held-canary-42")
    log = logging.getLogger("anything.else")
    with caplog.at_level(logging.INFO):
        log.info("one %s", "weakly-held-canary-42")
        assert f"one {REDACTED}" in caplog.text
        assert any(r is redactor for r in live_redactors())
        held = weakref.ref(redactor)
        del redactor
        gc.collect()
        assert held() is None  # the registry did not keep it alive
        log.info("two %s", "weakly-held-canary-42")  # nobody alive knows it any more
    assert "two weakly-held-canary-42" in caplog.text


def test_text_with_lone_surrogates_is_still_redacted():
    # e.g. a file name decoded with surrogateescape in a log message: UTF-8 cannot encode it
    redactor = Redactor()
    redactor.add("surrogate-canary-77")
    text = "file=b\udcffd.txt token=surrogate-canary-77"
    assert redactor.redact_text(text) == f"file=b\udcffd.txt token={REDACTED}"
    assert redactor.redact_text("only b\udcffd") == "only b\udcffd"
