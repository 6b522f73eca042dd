"""The encrypted credential store, its API (write-only secrets), CLI and tenant scoping."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from dataworkflows import Action, ActionContext, ActionResult, Credential, hookimpl
from dataworkflows.cli.main import build_cli
from dataworkflows.db.connector_models import credentials as credentials_table
from dataworkflows.secrets.credentials import CredentialStore
from dataworkflows.secrets.keys import KeyRing, SecretKeyError, generate_key, key_id

SECRET = "xoxb-0123-Sup3r+secret/value="


class ShowCredential(Action):
    """Test action: proves which credential it was given (never its value)."""

    type = "test.show-credential"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        credential = await ctx.credentials.fetch(params.name)
        return ActionResult.succeeded(
            {
                "length": len(credential.secret),
                "source": credential.source,
                "tenant": ctx.credentials.tenant_id,
                "allowedHosts": list(credential.allowed_hosts),
            }
        )


class ShowPlugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(ShowCredential)


def show(name: str, workflow_id: str = "show") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Show a credential",
        "nodes": [
            {"id": "show", "actionType": "test.show-credential", "parameters": {"name": name}}
        ],
    }


async def run_as(kernel: Any, definition: dict[str, Any], tenant: str) -> dict[str, Any]:
    await kernel.service.apply(definition, tenant_id=tenant)
    summary, _ = await kernel.service.execute(definition["id"], trigger={}, tenant_id=tenant)
    kernel.start_worker()
    await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
    return dict(await kernel.service.get_execution(summary["executionId"]))


# -- encryption -------------------------------------------------------------------------


def test_keyring_round_trip_binds_tenant_and_name():
    ring = KeyRing.from_setting(generate_key())
    token = ring.encrypt(SECRET, "acme", "slack")
    assert token.startswith(f"v1.{ring.primary_id}.")
    assert SECRET not in token and base64.urlsafe_b64encode(SECRET.encode()).decode() not in token
    assert ring.decrypt(token, "acme", "slack") == SECRET
    assert ring.encrypt(SECRET, "acme", "slack") != token  # fresh nonce every time
    for tenant, name in (("other", "slack"), ("acme", "slack2")):
        with pytest.raises(SecretKeyError, match="failed authentication"):
            ring.decrypt(token, tenant, name)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretKeyError, match="failed authentication"):
        ring.decrypt(tampered, "acme", "slack")


def test_wrong_or_malformed_keys_are_clear_errors():
    old, new = generate_key(), generate_key()
    token = KeyRing.from_setting(old).encrypt(SECRET, "t", "n")
    with pytest.raises(SecretKeyError) as info:
        KeyRing.from_setting(new).decrypt(token, "t", "n")
    message = str(info.value)
    assert key_id(base64.urlsafe_b64decode(old)) in message and "re-encrypt" in message
    assert KeyRing.from_setting(f"{new},{old}").decrypt(token, "t", "n") == SECRET
    for bad in ("not-a-key", "c2hvcnQ=", f"{new},xyz", " , "):
        with pytest.raises(SecretKeyError, match="DATAWORKFLOWS_SECRET_KEY"):
            KeyRing.from_setting(bad)
    with pytest.raises(SecretKeyError, match="not an encrypted credential"):
        KeyRing.from_setting(new).decrypt(SECRET, "t", "n")


def test_host_patterns():
    def host_allowed(host: str, allowed: list[str]) -> bool:
        return Credential("", "", tuple(allowed)).allows_host(host)

    assert host_allowed("api.slack.com", [])
    assert host_allowed("api.slack.com", ["api.slack.com"])
    assert host_allowed("hooks.slack.com", ["*.slack.com"])
    assert not host_allowed("slack.com.evil.test", ["*.slack.com", "slack.com"])


# -- the API ----------------------------------------------------------------------------


async def test_credentials_api_never_returns_secrets(api_factory, kernel_factory):
    kernel = await kernel_factory(secret_key=generate_key())
    api = await api_factory(kernel)
    texts = []

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        resp = await api.request(method, path, **kwargs)
        text = await resp.text()
        texts.append(text)
        return resp.status, (json.loads(text) if text else None)

    body = {
        "name": "slack-bot",
        "secret": SECRET,
        "description": "bot",
        "allowedHosts": ["slack.com"],
    }
    status, created = await call(
        "POST", "/api/v1/credentials", json=body, headers={"X-Principal": "ada"}
    )
    assert status == 201
    assert created["name"] == "slack-bot" and created["allowedHosts"] == ["slack.com"]
    assert (
        created["createdBy"] == "ada"
        and created["keyId"] == kernel.credentials.store.keyring().primary_id
    )
    assert "secret" not in created
    assert (await call("POST", "/api/v1/credentials", json=body))[0] == 409
    status, listed = await call("GET", "/api/v1/credentials")
    assert [c["name"] for c in listed["items"]] == ["slack-bot"]
    assert (await call("GET", "/api/v1/credentials/slack-bot"))[0] == 200
    status, replaced = await call(
        "PUT", "/api/v1/credentials/slack-bot", json={"secret": SECRET + "2"}
    )
    assert status == 200 and replaced["description"] is None
    assert (
        await call("PUT", "/api/v1/credentials/other", json={"secret": "other-secret-value-77"})
    )[0] == 201
    # another tenant sees nothing
    status, other = await call("GET", "/api/v1/credentials", headers={"X-Tenant-Id": "acme"})
    assert other["items"] == []
    assert (await call("GET", "/api/v1/credentials/slack-bot", headers={"X-Tenant-Id": "acme"}))[
        0
    ] == 404
    assert (await call("DELETE", "/api/v1/credentials/slack-bot", headers={"X-Tenant-Id": "acme"}))[
        0
    ] == 404
    assert (await call("DELETE", "/api/v1/credentials/other"))[0] == 204
    assert (await call("DELETE", "/api/v1/credentials/other"))[0] == 404
    for text in texts:
        assert SECRET not in text and "Sup3r" not in text


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": "bad name", "secret": SECRET}, "$.name"),
        ({"name": "", "secret": SECRET}, "$.name"),
        ({"name": "ok", "secret": "short"}, "$.secret"),
        ({"name": "ok", "secret": 12345678}, "$.secret"),
        ({"name": "ok"}, "$.secret"),
        ({"name": "ok", "secret": SECRET, "allowedHosts": "slack.com"}, "$.allowedHosts"),
        ({"name": "ok", "secret": SECRET, "allowedHosts": ["https://x"]}, "$.allowedHosts[0]"),
        ({"name": "ok", "secret": SECRET, "description": 5}, "$.description"),
    ],
)
async def test_invalid_credentials_are_rejected_and_change_nothing(
    api_factory, kernel_factory, body, path
):
    kernel = await kernel_factory(secret_key=generate_key())
    api = await api_factory(kernel)
    resp = await api.post("/api/v1/credentials", json=body)
    assert resp.status == 422
    error = await resp.json()
    assert error["code"] == "invalid_credential"
    assert error["details"]["path"] == path
    assert SECRET not in await resp.text()
    async with kernel.db.connect() as conn:
        assert (
            await conn.execute(select(func.count()).select_from(credentials_table))
        ).scalar_one() == 0


async def test_unknown_fields_and_bad_json(api_factory, kernel_factory):
    api = await api_factory(await kernel_factory(secret_key=generate_key()))
    resp = await api.post("/api/v1/credentials", json={"name": "x1", "secret": SECRET, "value": 1})
    assert resp.status == 422 and (await resp.json())["details"] == {"fields": ["value"]}
    resp = await api.post("/api/v1/credentials", data=b"{nope")
    assert resp.status == 400
    resp = await api.put("/api/v1/credentials/x1", json={"name": "x2", "secret": SECRET})
    assert resp.status == 422


async def test_without_a_key_nothing_is_stored(api_factory, kernel_factory):
    kernel = await kernel_factory(secret_key=None, secret_key_file="")  # no key at all
    api = await api_factory(kernel)
    resp = await api.post("/api/v1/credentials", json={"name": "slack", "secret": SECRET})
    assert resp.status == 503
    error = await resp.json()
    assert error["code"] == "secret_key_missing"
    assert "DATAWORKFLOWS_SECRET_KEY is not set" in error["message"]
    async with kernel.db.connect() as conn:
        assert (
            await conn.execute(select(func.count()).select_from(credentials_table))
        ).scalar_one() == 0


async def test_a_malformed_key_disables_the_store_with_a_clear_error(api_factory, kernel_factory):
    api = await api_factory(await kernel_factory(secret_key="definitely-not-a-key"))
    resp = await api.post("/api/v1/credentials", json={"name": "slack", "secret": SECRET})
    assert resp.status == 503
    assert "generate-key" in (await resp.json())["message"]


# -- actions ----------------------------------------------------------------------------


async def test_actions_get_their_tenants_credentials_only(kernel_factory, monkeypatch):
    key = generate_key()
    kernel = await kernel_factory(plugins=[ShowPlugin()], secret_key=key)
    store = kernel.credentials.store
    await store.put("tenant-b", "b-token", SECRET, allowed_hosts=["api.example.com"])
    await store.put("tenant-a", "shared-name", "a-secret-value")
    await store.put("tenant-b", "shared-name", "b-secret-value-longer")

    run = await run_as(kernel, show("b-token", "show-b"), "tenant-b")
    assert run["actions"][0]["outputs"] == {
        "length": len(SECRET),
        "source": "store",
        "tenant": "tenant-b",
        "allowedHosts": ["api.example.com"],
    }
    run = await run_as(kernel, show("b-token", "show-a"), "tenant-a")
    assert run["status"] == "Failed"
    error = run["actions"][0]["error"]
    assert error["code"] == "credential_not_found"
    assert "tenant-a" in error["message"]
    for tenant, length in (("tenant-a", 14), ("tenant-b", 21)):
        run = await run_as(kernel, show("shared-name", f"shared-{tenant}"), tenant)
        assert run["actions"][0]["outputs"]["length"] == length

    # a row copied into another tenant does not decrypt there
    row = await store.get("tenant-b", "b-token")
    async with kernel.db.begin() as conn:
        await conn.execute(
            credentials_table.insert().values({**row, "id": uuid.uuid4(), "tenant_id": "tenant-a"})
        )
    run = await run_as(kernel, show("b-token", "show-a-copy"), "tenant-a")
    assert run["actions"][0]["error"]["code"] == "credential_store_locked"
    assert "failed authentication" in run["actions"][0]["error"]["message"]

    # the environment provider comes after the store, for any tenant
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_FROM_ENV", "env-secret-value")
    run = await run_as(kernel, show("from-env", "show-env"), "tenant-a")
    assert run["actions"][0]["outputs"]["source"] == "provider"
    run = await run_as(kernel, show("bad name!", "show-bad"), "tenant-a")
    assert run["actions"][0]["error"]["code"] == "invalid_credential_name"


async def test_a_wrong_key_fails_the_step_clearly(kernel_factory, database_url):
    old = generate_key()
    writer = await kernel_factory(secret_key=old)
    await writer.credentials.store.put("default", "slack", SECRET)
    reader = await kernel_factory(plugins=[ShowPlugin()], secret_key=generate_key())
    run = await run_as(reader, show("slack"), "default")
    error = run["actions"][0]["error"]
    assert error["code"] == "credential_store_locked"
    assert "re-encrypt" in error["message"] and SECRET not in json.dumps(run)
    await reader.stop_worker()  # the next run must be executed by the key-less kernel
    locked = await kernel_factory(plugins=[ShowPlugin()], secret_key=None, secret_key_file="")
    run = await run_as(locked, show("slack", "show-locked"), "default")
    assert run["actions"][0]["error"]["code"] == "credential_store_locked"
    assert "DATAWORKFLOWS_SECRET_KEY is not set" in run["actions"][0]["error"]["message"]


async def test_store_rotation_re_encrypts_every_row(kernel_factory):
    old, new = generate_key(), generate_key()
    kernel = await kernel_factory(secret_key=old)
    await kernel.credentials.store.put("a", "one", SECRET)
    await kernel.credentials.store.put("b", "two", SECRET + "x")
    rotated = CredentialStore(kernel.db, kernel.clock, f"{new},{old}")
    await rotated.put("a", "three", "fresh-secret")
    summary = await rotated.re_encrypt()
    assert summary == {"total": 3, "reencrypted": 2, "current": 1, "failed": []}
    only_new = CredentialStore(kernel.db, kernel.clock, new)
    assert (await only_new.reveal("a", "one")).secret == SECRET
    assert (await only_new.reveal("b", "two")).secret == SECRET + "x"
    assert {r["key_id"] for r in await only_new.list("a")} == {only_new.keyring().primary_id}
    assert await CredentialStore(kernel.db, kernel.clock, new).re_encrypt() == {
        "total": 3,
        "reencrypted": 0,
        "current": 3,
        "failed": [],
    }


# -- the command line -------------------------------------------------------------------


def test_cli_set_list_rotate_and_delete(database_url, monkeypatch):
    old, new = generate_key(), generate_key()
    monkeypatch.setenv("DATAWORKFLOWS_DATABASE_URL", database_url)
    monkeypatch.setenv("DATAWORKFLOWS_AUTO_MIGRATE", "true")
    monkeypatch.setenv("DATAWORKFLOWS_LOAD_PLUGINS", "")
    runner = CliRunner()

    def cli(*args: str, key: str | None = old, stdin: str | None = None) -> Any:
        if key is None:
            monkeypatch.delenv("DATAWORKFLOWS_SECRET_KEY", raising=False)
        else:
            monkeypatch.setenv("DATAWORKFLOWS_SECRET_KEY", key)
        return runner.invoke(build_cli(), list(args), input=stdin)

    result = cli("credentials", "set", "slack", "--allowed-host", "slack.com", stdin=SECRET + "\n")
    assert result.exit_code == 0, result.output
    assert "created credential slack" in result.output
    monkeypatch.setenv("MY_TOKEN", "token-from-env-1")
    result = cli("credentials", "set", "other", "--tenant", "acme", "--from-env", "MY_TOKEN")
    assert result.exit_code == 0, result.output
    result = cli("credentials", "list", "--json")
    listed = json.loads(result.output)
    assert [c["name"] for c in listed] == ["slack"] and listed[0]["allowedHosts"] == ["slack.com"]
    assert SECRET not in result.output

    monkeypatch.setenv("DATAWORKFLOWS_SECRET_KEY_FILE", "")  # no key file either
    result = cli("credentials", "set", "nokey", key=None, stdin=SECRET + "\n")
    monkeypatch.delenv("DATAWORKFLOWS_SECRET_KEY_FILE")
    assert result.exit_code == 1 and "DATAWORKFLOWS_SECRET_KEY is not set" in result.output

    result = cli("credentials", "re-encrypt", key=new)  # the old key is missing
    assert result.exit_code == 1
    assert "2 failed (of 2)" in result.output and "re-encrypt" in result.output
    result = cli("credentials", "re-encrypt", key=f"{new},{old}")
    assert result.exit_code == 0, result.output
    assert "2 re-encrypted, 0 already current, 0 failed (of 2)" in result.output
    result = cli("credentials", "re-encrypt", key=new)
    assert "0 re-encrypted, 2 already current" in result.output

    result = cli("credentials", "delete", "slack", key=new)
    assert result.exit_code == 0
    result = cli("credentials", "delete", "slack", key=new)
    assert result.exit_code == 1 and "no credential 'slack'" in result.output
    result = cli("credentials", "generate-key")
    assert len(base64.urlsafe_b64decode(result.output.strip())) == 32


def test_plugin_settings_and_the_key_setting():
    from dataworkflows.settings import Settings

    key = generate_key()
    settings = Settings.from_env(
        {
            "DATAWORKFLOWS_SLACK_BASE_URL": "http://127.0.0.1:1/api/",
            "DATAWORKFLOWS_HTTP_ALLOW_NETWORKS": "10.0.0.0/8",
            "DATAWORKFLOWS_CREDENTIAL_SLACK": "xoxb-never-a-setting",
            "DATAWORKFLOWS_TEST_POSTGRES_URL": "postgresql://x",
            "DATAWORKFLOWS_PORT": "9999",
            "DATAWORKFLOWS_SECRET_KEY": key,
        }
    )
    assert settings.extra == {
        "slack_base_url": "http://127.0.0.1:1/api/",
        "http_allow_networks": "10.0.0.0/8",
    }
    assert settings.port == 9999 and settings.secret_key == key
    assert key not in repr(settings)
