"""Secret fields declared by plugins are encrypted at rest (issue #23), on every backend:
trigger configs (a webhook's inline signing secret) and actions' parameters in definitions.

A canary secret given inline to a webhook trigger, through the API and the CLI, must appear
in no table, no database file (SQLite: the file, its WAL, ``.dump``; PostgreSQL:
``pg_dump``), no API answer, no event and no log line, while signed deliveries still verify,
also after a key rotation. The key: generated beside a SQLite database on first start;
explicit on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from dataworkflows import TriggerType, hookimpl
from dataworkflows.cli.main import build_cli
from dataworkflows.common.clock import FakeClock
from dataworkflows.db import migrate
from dataworkflows.db.database import libpq_url
from dataworkflows.db.schema import metadata
from dataworkflows.db.trigger_models import workflow_triggers
from dataworkflows.secrets.fields import ENVELOPE_KEY, MASK, is_sealed, trigger_fields
from dataworkflows.secrets.keys import SecretKeyError, generate_key, key_file_path
from dataworkflows.secrets.secret_paths import ANY_ITEM, model_secret_paths
from dataworkflows.settings import Settings
from dataworkflows_webhook import WebhookConfig, sign

NOW = datetime(2026, 2, 2, 9, 30, tzinfo=UTC)


def canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


def sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite"):
        return None
    return Path(make_url(database_url).database or "")


async def everything_stored(kernel: Any, database_url: str) -> str:
    """Every row of every table, plus the database's files / dump, as one text."""
    parts = []
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            rows = await conn.execute(select(table))
            parts.append(repr([tuple(r) for r in rows]))
    path = sqlite_path(database_url)
    if path is not None:
        parts.append(await asyncio.to_thread(_sqlite_files, path))
    else:
        dump = await asyncio.to_thread(
            subprocess.run,
            ["pg_dump", "--no-owner", libpq_url(database_url)],
            capture_output=True,
            check=True,
        )
        parts.append(dump.stdout.decode())
    return "\n".join(parts)


def _sqlite_files(path: Path) -> str:
    """The database file, its WAL and shared-memory files, and its ``.dump``."""
    parts = []
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        if file.exists():
            parts.append(file.read_bytes().decode("latin-1"))
    with sqlite3.connect(path) as raw:  # what `sqlite3 FILE .dump` prints
        parts.append("\n".join(raw.iterdump()))
    return "\n".join(parts)


class Answers:
    """Calls the API and keeps every answer's text (to look for a canary in them)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.texts: list[str] = []

    async def call(self, method: str, path: str, status: int | None = None, **kw: Any) -> Any:
        """The parsed answer; its status must be ``status`` (default: any 2xx)."""
        resp = await self.api.request(method, path, **kw)
        text = await resp.text()
        self.texts.append(text)
        assert resp.status == status if status else resp.status < 300, text
        return json.loads(text) if text else None


async def canary_setup(
    kernel_factory: Any, api_factory: Any, caplog: pytest.LogCaptureFixture, **kernel: Any
) -> tuple[str, str, Any, Any, Answers]:
    """(a canary secret, a key, a kernel with that key, its API, an answer recorder);
    every log record from now on is captured."""
    caplog.set_level(logging.DEBUG)
    key = generate_key()
    started = await kernel_factory(secret_key=key, **kernel)
    api = await api_factory(started)
    return canary(), key, started, api, Answers(api)


async def create_workflow(api: Any, load_fixture: Any) -> None:
    workflow = load_fixture("workflows/webhook-echo-workflow.json")
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=workflow)
    assert resp.status == 201, await resp.text()


async def deliver(api: Any, kernel: Any, trigger_id: str, secret: str, delivery: str) -> str:
    body = json.dumps({"action": "opened", "message": "Ticket 42 was opened"}).encode()
    ts = int(kernel.clock.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(ts),
        "X-Signature-256": "sha256=" + sign(secret, body, ts),
        "X-Delivery-Id": delivery,
    }
    resp = await api.post(f"/hooks/{trigger_id}", data=body, headers=headers)
    assert resp.status == 202, await resp.text()
    execution_id = (await resp.json())["executionId"]
    assert await kernel.ledger.wait_until_final(uuid.UUID(execution_id), 30) == "Succeeded"
    wrong = dict(headers, **{"X-Signature-256": "sha256=" + sign("not-it", body, ts)})
    resp = await api.post(f"/hooks/{trigger_id}", data=body, headers=wrong)
    assert resp.status == 401
    return str(execution_id)


# -- declared secret fields -------------------------------------------------------------


class Inner(BaseModel):
    password: SecretStr
    label: str = "x"


class ThirdPartyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_token: str = Field(alias="apiToken", json_schema_extra={"writeOnly": True})
    logins: list[Inner] = []
    headers: dict[str, SecretStr] = {}
    room: str = "lobby"


class Doorbell(TriggerType):
    type = "doorbell"
    Config = ThirdPartyConfig


class DoorbellPlugin:
    @hookimpl
    def register_triggers(self, register: Any) -> None:
        register(Doorbell)


def test_secret_paths_come_from_the_owners_schema() -> None:
    paths = model_secret_paths(ThirdPartyConfig)
    assert ("apiToken",) in paths and ("api_token",) in paths  # alias and field name
    assert ("logins", ANY_ITEM, "password") in paths
    assert any(p[0] == "headers" for p in paths)
    assert not any("room" in p or "label" in p for p in paths)
    webhook = model_secret_paths(WebhookConfig)
    assert ("signature", "secret") in webhook
    assert not any("secretName" in p or "secret_name" in p for p in webhook)


def test_seal_open_mask_and_binding() -> None:
    from dataworkflows.secrets.keys import KeyRing

    ring = KeyRing.from_setting(generate_key())
    secret = canary()
    config = {
        "apiToken": secret,
        "logins": [{"password": secret + "-1"}, {"password": secret + "-2", "label": "b"}],
        "headers": {"X-Key": secret + "-h"},
        "room": "hall",
    }
    fields = trigger_fields(ThirdPartyConfig, "acme", "t1")
    sealed = fields.seal(config, ring)
    assert secret not in json.dumps(sealed) and sealed["room"] == "hall"
    assert is_sealed(sealed["apiToken"]) and is_sealed(sealed["logins"][1]["password"])
    assert sealed["logins"][1]["label"] == "b"
    assert fields.open(sealed, ring) == config
    assert fields.mask(config)["logins"][0]["password"] == MASK
    # a ciphertext is bound to its tenant, trigger and path
    with pytest.raises(SecretKeyError):
        trigger_fields(ThirdPartyConfig, "other", "t1").open(sealed, ring)
    with pytest.raises(SecretKeyError):
        trigger_fields(ThirdPartyConfig, "acme", "t2").open(sealed, ring)
    swapped = {**sealed, "apiToken": sealed["logins"][0]["password"]}
    with pytest.raises(SecretKeyError):
        fields.open(swapped, ring)


async def test_a_third_party_types_secret_fields_are_sealed_masked_and_opened(
    kernel_factory: Any, api_factory: Any, load_fixture: Any, database_url: str
) -> None:
    kernel = await kernel_factory(plugins=[DoorbellPlugin()])
    api = await api_factory(kernel)
    await create_workflow(api, load_fixture)
    secret = canary()
    body = {
        "type": "doorbell",
        "config": {"apiToken": secret, "logins": [{"password": secret + "-p"}], "room": "hall"},
    }
    resp = await api.post("/api/v1/workflows/webhook-echo/triggers", json=body)
    text = await resp.text()
    assert resp.status == 201, text
    assert secret not in text
    view = json.loads(text)
    assert view["config"]["apiToken"] == MASK
    assert view["config"]["logins"][0]["password"] == MASK
    assert secret not in await everything_stored(kernel, database_url)
    handle = await kernel.plugin_api.get_trigger(view["id"])
    assert handle.config.api_token == secret
    assert handle.config.logins[0].password.get_secret_value() == secret + "-p"


# -- the webhook canary, through the API ------------------------------------------------


async def test_an_inline_webhook_secret_is_never_stored_or_shown(
    kernel_factory: Any,
    api_factory: Any,
    load_fixture: Any,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret, old, kernel, api, recorder = await canary_setup(
        kernel_factory, api_factory, caplog, clock=FakeClock(NOW)
    )
    call, answers = recorder.call, recorder.texts

    await create_workflow(api, load_fixture)
    base = "/api/v1/workflows/webhook-echo/triggers"
    trigger = await call(
        "POST",
        base,
        json={"type": "webhook", "config": {"signature": {"secret": secret}}},
        headers={"Idempotency-Key": "create-1"},
    )
    tid = trigger["id"]
    assert trigger["config"]["signature"]["secret"] == MASK
    # a merge patch keeps the secret; a PUT of what was read (mask included) keeps it too
    await call("PATCH", f"{base}/{tid}", json={"config": {"signature": {"toleranceSeconds": 60}}})
    read = await call("GET", f"{base}/{tid}")
    await call("PUT", f"{base}/{tid}", json={"config": read["config"]})
    await call("GET", base)
    await call("POST", f"{base}/{tid}/disable")
    await call("POST", f"{base}/{tid}/enable")
    execution_id = await deliver(api, kernel, tid, secret, "evt-1")
    await call("GET", f"/api/v1/executions/{execution_id}")
    await call("GET", f"/api/v1/executions/{execution_id}/events")
    await call("GET", "/api/v1/plugins")

    async def nowhere() -> None:
        stored = await everything_stored(kernel, database_url)
        assert secret not in stored
        assert ENVELOPE_KEY in stored  # it is there, sealed
        assert not any(secret in a for a in answers)
        assert not any(secret in r.getMessage() for r in caplog.records)
        assert secret not in caplog.text

    await nowhere()

    # rotation: "new,old" re-encrypts, then the new key alone verifies deliveries
    new = generate_key()
    await kernel.close()
    rotating = await kernel_factory(clock=FakeClock(NOW), secret_key=f"{new},{old}")
    assert (await rotating.triggers.re_encrypt())["reencrypted"] == 1
    assert (await rotating.triggers.re_encrypt())["current"] == 1
    await rotating.close()
    rotated = await kernel_factory(clock=FakeClock(NOW), secret_key=new)
    api = await api_factory(rotated)
    await deliver(api, rotated, tid, secret, "evt-2")
    kernel = rotated
    await nowhere()
    # the old key alone no longer opens it: the trigger is reported, not leaked
    stale = await kernel_factory(secret_key=old)
    view = await stale.triggers.get("webhook-echo", tid)
    assert view["config"] is None and view["lastError"]["code"] == "secret_key_missing"
    assert await stale.plugin_api.get_trigger(tid) is None


async def test_without_a_key_an_inline_secret_is_refused_and_nothing_is_written(
    kernel_factory: Any, api_factory: Any, load_fixture: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    kernel = await kernel_factory(secret_key=None, secret_key_file="")
    started = [
        r.getMessage() for r in caplog.records if "credential store disabled" in r.getMessage()
    ]
    assert len(started) == 1 and "dataworkflows credentials generate-key" in started[0]
    api = await api_factory(kernel)
    await create_workflow(api, load_fixture)
    resp = await api.post(
        "/api/v1/workflows/webhook-echo/triggers",
        json={"type": "webhook", "config": {"signature": {"secret": canary()}}},
    )
    assert resp.status == 503
    error = await resp.json()
    assert error["code"] == "secret_key_missing" and "generate-key" in error["message"]
    async with kernel.db.connect() as conn:
        count = await conn.execute(select(func.count()).select_from(workflow_triggers))
        assert count.scalar_one() == 0
    # a trigger without secrets needs no key
    resp = await api.post(
        "/api/v1/workflows/webhook-echo/triggers", json={"type": "webhook", "config": {}}
    )
    assert resp.status == 201


# -- the canary through the CLI ---------------------------------------------------------


def test_cli_created_trigger_secret_is_sealed(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, load_fixture: Any
) -> None:
    secret = canary()
    monkeypatch.setenv("DATAWORKFLOWS_DATABASE_URL", database_url)
    monkeypatch.setenv("DATAWORKFLOWS_AUTO_MIGRATE", "true")
    if not database_url.startswith("sqlite"):
        monkeypatch.setenv("DATAWORKFLOWS_SECRET_KEY", generate_key())
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(load_fixture("workflows/webhook-echo-workflow.json")))
    trigger = tmp_path / "trigger.json"
    trigger.write_text(json.dumps({"type": "webhook", "config": {"signature": {"secret": secret}}}))
    runner = CliRunner()
    result = runner.invoke(build_cli(), ["apply", str(workflow)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(build_cli(), ["triggers", "create", "webhook-echo", f"@{trigger}"])
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    created = json.loads(result.output)
    assert created["config"]["signature"]["secret"] == MASK
    result = runner.invoke(build_cli(), ["triggers", "list", "webhook-echo"])
    assert result.exit_code == 0 and secret not in result.output
    result = runner.invoke(build_cli(), ["credentials", "re-encrypt"])
    assert result.exit_code == 0, result.output
    assert "trigger secrets: 0 triggers re-encrypted, 1 already current" in result.output
    # bad input: a message, a non-zero exit, nothing written
    result = runner.invoke(build_cli(), ["triggers", "create", "webhook-echo", '{"type": "nope"}'])
    assert result.exit_code == 1 and "invalid_trigger" in result.output
    result = runner.invoke(build_cli(), ["triggers", "list", "webhook-echo", "--json"])
    assert len(json.loads(result.output)["items"]) == 1

    from sqlalchemy import create_engine

    from dataworkflows.db.database import sync_url

    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            (config,) = conn.execute(select(workflow_triggers.c.config)).one()
    finally:
        engine.dispose()
    assert secret not in json.dumps(config) and is_sealed(config["signature"]["secret"])


# -- the key: generated beside a SQLite database, explicit on PostgreSQL ------------------


async def test_first_start_on_sqlite_generates_a_key_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dataworkflows.kernel import Kernel

    caplog.set_level(logging.INFO)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
    path = key_file_path(settings)
    assert path == Path(f"{tmp_path}/fresh.db.key") and not path.exists()
    kernel = Kernel(settings, entrypoints=False)
    await kernel.start()
    try:
        row, created = await kernel.credentials.store.put("default", "slack", "xoxb-123456")
        assert created and row["key_id"] == kernel.credentials.store.keyring().primary_id
    finally:
        await kernel.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    announced = [r for r in caplog.records if "generated the secret key" in r.getMessage()]
    assert len(announced) == 1 and str(path.resolve()) in announced[0].getMessage()
    key = path.read_text().strip()
    caplog.clear()
    again = Kernel(settings, entrypoints=False)  # the second start uses it, silently
    await again.start()
    try:
        assert (await again.credentials.store.reveal("default", "slack")).secret == "xoxb-123456"
    finally:
        await again.close()
    assert path.read_text().strip() == key
    assert not [r for r in caplog.records if "generated the secret key" in r.getMessage()]


def test_postgresql_needs_an_explicit_key_and_says_how() -> None:
    from dataworkflows.secrets.keys import resolve_secret_key

    settings = Settings(database_url="postgresql+psycopg://u@127.0.0.1/x")
    assert key_file_path(settings) is None
    key, missing = resolve_secret_key(settings)
    assert key is None
    assert "PostgreSQL" in missing and "dataworkflows credentials generate-key" in missing
    assert "DATAWORKFLOWS_SECRET_KEY" in missing
    explicit = Settings(database_url=settings.database_url, secret_key="k")
    assert resolve_secret_key(explicit) == ("k", "")


# -- the data migration -----------------------------------------------------------------


async def test_migration_encrypts_plaintext_secrets_up_down_up(
    kernel_factory: Any,
    api_factory: Any,
    load_fixture: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = canary()
    key = generate_key()
    kernel = await kernel_factory(clock=FakeClock(NOW), secret_key=key)
    api = await api_factory(kernel)
    await create_workflow(api, load_fixture)
    resp = await api.post(
        "/api/v1/workflows/webhook-echo/triggers",
        json={"type": "webhook", "config": {"signature": {"secret": secret}}},
    )
    tid = (await resp.json())["id"]
    # a row as the code before 0007 wrote it: the secret in plaintext
    plaintext = {"signature": {"secret": secret}}
    async with kernel.db.begin() as conn:
        await conn.execute(
            update(workflow_triggers).where(workflow_triggers.c.id == tid).values(config=plaintext)
        )
    await kernel.close()

    async def stored_config() -> Any:
        async with kernel.db.connect() as conn:
            return (
                await conn.execute(
                    select(workflow_triggers.c.config).where(workflow_triggers.c.id == tid)
                )
            ).scalar_one()

    await asyncio.to_thread(migrate.downgrade, database_url, "0006_merge", secret_key=key)
    assert await stored_config() == plaintext  # nothing to decrypt
    await asyncio.to_thread(migrate.upgrade, database_url, secret_key=key)
    sealed = await stored_config()
    assert secret not in json.dumps(sealed) and is_sealed(sealed["signature"]["secret"])
    # the downgrade documents and does the reverse: plaintext for the older code
    await asyncio.to_thread(migrate.downgrade, database_url, "0006_merge", secret_key=key)
    assert await stored_config() == plaintext
    # without a key, an upgrade that would have to encrypt refuses (and changes nothing)
    monkeypatch.delenv("DATAWORKFLOWS_SECRET_KEY", raising=False)
    monkeypatch.setenv("DATAWORKFLOWS_SECRET_KEY_FILE", "")
    with pytest.raises(SecretKeyError, match="generate-key"):
        await asyncio.to_thread(migrate.upgrade, database_url)
    monkeypatch.delenv("DATAWORKFLOWS_SECRET_KEY_FILE")
    assert await stored_config() == plaintext
    assert not migrate.is_up_to_date(database_url)
    await asyncio.to_thread(migrate.upgrade, database_url, secret_key=key)
    assert migrate.is_up_to_date(database_url)
    assert secret not in json.dumps(await stored_config())
    # and the sealed secret still verifies a delivery
    again = await kernel_factory(clock=FakeClock(NOW), secret_key=key)
    await deliver(await api_factory(again), again, tid, secret, "evt-migrated")


# -- one resolver: a webhook's secretName finds an API-stored credential --------------------


async def test_secret_name_resolves_a_credential_stored_through_the_api(
    kernel_factory: Any, api_factory: Any, load_fixture: Any
) -> None:
    import threading

    seen: list[str] = []

    class Provider:
        @hookimpl
        def resolve_secret(self, name: str, tenant_id: str) -> str | None:
            seen.append(threading.current_thread().name)
            return "from-a-provider" if name == "provided" else None

    kernel = await kernel_factory(clock=FakeClock(NOW), plugins=[Provider()])
    api = await api_factory(kernel)
    await create_workflow(api, load_fixture)
    secret = canary()
    resp = await api.post("/api/v1/credentials", json={"name": "hook-key", "secret": secret})
    assert resp.status == 201, await resp.text()
    resp = await api.post(
        "/api/v1/workflows/webhook-echo/triggers",
        json={"type": "webhook", "config": {"signature": {"secretName": "hook-key"}}},
    )
    tid = (await resp.json())["id"]
    await deliver(api, kernel, tid, secret, "evt-stored")
    assert seen == []  # the store answered: no provider was asked
    # not in the store: the providers, in a worker thread, never on the event loop
    assert await kernel.plugin_api.resolve_secret("provided") == "from-a-provider"
    assert seen and threading.main_thread().name not in seen
    assert await kernel.plugin_api.resolve_secret("unknown-name") is None
    # another tenant's stored credential is not reachable
    assert await kernel.plugin_api.resolve_secret("hook-key", "other-tenant") is None


# -- secret parameters of actions, in stored definitions ------------------------------------


class TokenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr
    note: str = ""


def _token_action() -> Any:
    from dataworkflows import Action, ActionContext, ActionResult

    class UseToken(Action):
        type = "test.use-token"
        title = "Uses a secret token parameter"
        Params = TokenParams

        async def run(self, ctx: ActionContext, params: TokenParams) -> ActionResult:
            token = params.token.get_secret_value()
            logging.getLogger("test.use-token").info("using token %s", token)
            return ActionResult.succeeded({"length": len(token), "echo": token})

    return UseToken


class TokenPlugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(_token_action())


def token_workflow(secret: str, workflow_id: str = "uses-token") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Uses a token",
        "nodes": [
            {
                "id": "call",
                "actionType": "test.use-token",
                "parameters": {"token": secret, "note": "{{ trigger.note }}"},
            }
        ],
    }


async def test_secret_action_parameters_are_sealed_in_definitions(
    kernel_factory: Any,
    api_factory: Any,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret, old, kernel, api, recorder = await canary_setup(
        kernel_factory, api_factory, caplog, plugins=[TokenPlugin()]
    )
    call, answers = recorder.call, recorder.texts

    created = await call(
        "POST", "/api/v1/workflows?autoActivate=true", 201, json=token_workflow(secret)
    )
    assert created["definition"]["nodes"][0]["parameters"]["token"] == MASK
    # the same definition again is recognised (sealing is deterministic for definitions)
    again = await call(
        "POST", "/api/v1/workflows/uses-token/versions", 409, json=token_workflow(secret)
    )
    assert again["code"] == "duplicate_version"
    await call(
        "POST", "/api/v1/workflows/uses-token/versions", 201, json=token_workflow(secret + "2")
    )
    await call("GET", "/api/v1/workflows/uses-token")
    await call("GET", "/api/v1/workflows/uses-token/versions/1")
    await call("GET", "/api/v1/workflows/uses-token/audit")
    await call("POST", "/api/v1/workflows/uses-token/publish")  # version 2
    await call("POST", "/api/v1/workflows/uses-token/rollback")  # back to version 1

    async def run_once(kernel: Any, api: Any) -> None:
        resp = await api.post(
            "/api/v1/workflows/uses-token/execute", json={"trigger": {"note": "n"}}
        )
        answers.append(await resp.text())
        execution_id = (await resp.json())["executionId"]
        assert await kernel.ledger.wait_until_final(uuid.UUID(execution_id), 30) == "Succeeded"
        run = await call("GET", f"/api/v1/executions/{execution_id}")
        outputs = run["actions"][0]["outputs"]
        assert outputs["length"] == len(secret)  # the action got the plaintext
        await call("GET", f"/api/v1/executions/{execution_id}/events")

    await run_once(kernel, api)
    stored = await everything_stored(kernel, database_url)
    assert secret not in stored and ENVELOPE_KEY in stored
    assert not any(secret in a for a in answers)
    assert secret not in caplog.text

    # rotation
    new = generate_key()
    rotating = await kernel_factory(plugins=[TokenPlugin()], secret_key=f"{new},{old}")
    assert (await rotating.service.re_encrypt())["reencrypted"] == 2
    await kernel.close()
    await rotating.close()
    rotated = await kernel_factory(plugins=[TokenPlugin()], secret_key=new)
    await run_once(rotated, await api_factory(rotated))
    assert secret not in await everything_stored(rotated, database_url)
    assert not any(secret in a for a in answers)


async def test_without_a_key_a_secret_parameter_is_refused(
    kernel_factory: Any, api_factory: Any
) -> None:
    kernel = await kernel_factory(plugins=[TokenPlugin()], secret_key=None, secret_key_file="")
    api = await api_factory(kernel)
    resp = await api.post("/api/v1/workflows", json=token_workflow(canary()))
    assert resp.status == 503 and (await resp.json())["code"] == "secret_key_missing"
    resp = await api.get("/api/v1/workflows/uses-token")
    assert resp.status == 404


async def test_migration_seals_plaintext_parameters_and_their_checksum(
    kernel_factory: Any, database_url: str
) -> None:
    from dataworkflows.db.models import workflow_definitions
    from dataworkflows.engine.definitions import checksum

    secret = canary()
    key = generate_key()
    kernel = await kernel_factory(plugins=[TokenPlugin()], secret_key=key)
    await kernel.service.create_workflow(token_workflow(secret), auto_activate=True)
    plaintext = token_workflow(secret)
    d = workflow_definitions
    async with kernel.db.begin() as conn:  # as the code before 0007 stored it
        await conn.execute(update(d).values(definition=plaintext, checksum=checksum(plaintext)))
    models = {"test.use-token": TokenParams}

    async def stored() -> tuple[Any, str]:
        async with kernel.db.connect() as conn:
            row = (await conn.execute(select(d.c.definition, d.c.checksum))).one()
        return row.definition, row.checksum

    await asyncio.to_thread(
        migrate.downgrade, database_url, "0006_merge", secret_key=key, action_models=models
    )
    await asyncio.to_thread(migrate.upgrade, database_url, secret_key=key, action_models=models)
    definition, digest = await stored()
    assert secret not in json.dumps(definition) and digest == checksum(definition)
    await asyncio.to_thread(
        migrate.downgrade, database_url, "0006_merge", secret_key=key, action_models=models
    )
    assert (await stored())[0] == plaintext
    await asyncio.to_thread(migrate.upgrade, database_url, secret_key=key, action_models=models)
    assert secret not in json.dumps((await stored())[0])
    await kernel.close()
    again = await kernel_factory(plugins=[TokenPlugin()], secret_key=key)
    assert (await again.store.definition("uses-token", 1))["nodes"][0]["parameters"][
        "token"
    ] == secret


async def test_a_masked_secret_sent_back_keeps_the_stored_one_or_is_refused(
    kernel_factory: Any, api_factory: Any, load_fixture: Any
) -> None:
    kernel = await kernel_factory(plugins=[TokenPlugin()], clock=FakeClock(NOW))
    api = await api_factory(kernel)
    secret = canary()
    # definitions: a version built from what GET answered keeps the node's secret
    assert (await api.post("/api/v1/workflows", json=token_workflow(secret))).status == 201
    shown = (await (await api.get("/api/v1/workflows/uses-token")).json())["definition"]
    assert shown["nodes"][0]["parameters"]["token"] == MASK
    shown["displayName"] = "Uses a token, v2"
    resp = await api.post("/api/v1/workflows/uses-token/versions", json=shown)
    assert resp.status == 201, await resp.text()
    opened = await kernel.store.definition("uses-token", 2)
    assert opened["nodes"][0]["parameters"]["token"] == secret
    # ... but a mask with nothing to keep is refused, and nothing is written
    resp = await api.post("/api/v1/workflows", json=token_workflow(MASK, "masked-only"))
    assert resp.status == 422
    problem = (await resp.json())["details"]["problems"][0]
    assert problem["code"] == "masked_secret" and problem["path"] == "$.nodes[0].parameters.token"
    assert (await api.get("/api/v1/workflows/masked-only")).status == 404
    # triggers: the same
    await create_workflow(api, load_fixture)
    masked = {"type": "webhook", "config": {"signature": {"secret": MASK}}}
    resp = await api.post("/api/v1/workflows/webhook-echo/triggers", json=masked)
    assert resp.status == 422
    problem = (await resp.json())["details"]["problems"][0]
    assert problem == {
        "path": "$.config.signature.secret",
        "code": "masked_secret",
        "message": problem["message"],
    }
    async with kernel.db.connect() as conn:
        count = await conn.execute(select(func.count()).select_from(workflow_triggers))
        assert count.scalar_one() == 0
