"""``dataworkflows tokens``, the auth settings, ``serve``'s refusal of loose mode off
loopback, the start-up warning of loose mode, and the live stream in strict mode
(docs/auth.md)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import func, select

from dataworkflows.cli.server import is_loopback, refuse_loose_public
from dataworkflows.service.api_tokens import api_tokens
from dataworkflows.settings import Settings, SettingsError
from dataworkflows.testing.auth import api_token, bearer
from dataworkflows.testing.sse import open_stream


def test_tokens_create_list_revoke(cli: Any) -> None:
    made = cli(
        "tokens",
        "create",
        "--tenant",
        "acme",
        "--role",
        "runner",
        "--name",
        "ci",
        "--expires-in",
        "12h",
        "--json",
    )
    assert made.exit_code == 0, made.output
    view = json.loads(made.output)
    assert view["token"].startswith("dwt_") and view["role"] == "runner"
    assert view["expiresAt"] is not None and view["revokedAt"] is None
    listed = cli("tokens", "list", "--tenant", "acme", "--json")
    [shown] = json.loads(listed.output)
    assert shown["id"] == view["id"] and "token" not in shown
    assert view["token"] not in listed.output
    revoked = cli("tokens", "revoke", view["id"])
    assert revoked.exit_code == 0 and "revoked token" in revoked.output
    assert json.loads(cli("tokens", "list", "--json").output)[0]["revokedAt"] is not None
    assert "no API tokens for tenant globex" in cli("tokens", "list", "--tenant", "globex").output


def test_tokens_bad_input_is_refused_and_writes_nothing(cli: Any, database_url: str) -> None:
    for args, message in (
        (("--tenant", "../../etc", "--role", "admin", "--name", "x"), "does not match"),
        (("--tenant", "acme", "--role", "root", "--name", "x"), "'root' is not one of"),
        (("--tenant", "acme", "--role", "admin", "--name", "x", "--expires-in", "soon"), "12h"),
        (("--tenant", "acme", "--role", "admin", "--name", "x", "--expires-in", "0d"), "0d"),
    ):
        result = cli("tokens", "create", *args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)
    assert "no API tokens" in cli("tokens", "list").output
    missing = cli("tokens", "revoke", "3ea94595-12d9-4376-ae22-15468ec428d1")
    assert missing.exit_code == 1 and "token_not_found" in missing.output


def test_auth_settings() -> None:
    assert Settings(database_url="sqlite:///x.db").effective_auth_mode == "loose"
    assert Settings(database_url="postgresql://u@h/db").effective_auth_mode == "strict"
    assert Settings(database_url="postgresql://u@h/db", auth_mode="loose").effective_auth_mode == (
        "loose"
    )
    env = {"DATAWORKFLOWS_AUTH_MODE": "auto", "DATAWORKFLOWS_DATABASE_URL": "sqlite:///x.db"}
    assert Settings.from_env(env).auth_mode is None
    with pytest.raises(SettingsError, match="DATAWORKFLOWS_AUTH_MODE='open'"):
        Settings(auth_mode="open")
    with pytest.raises(SettingsError, match="DATAWORKFLOWS_JWT_LEEWAY_SECONDS"):
        Settings(jwt_leeway_seconds=3600)
    assert "hush" not in repr(Settings(jwt_secret="hush", scrape_token="hush"))


def serve(tmp_path: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``dataworkflows serve ARGS`` on a fresh SQLite file with ``env``; it must exit (with
    a timeout, should it start serving after all)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    environ["DATAWORKFLOWS_DATABASE_URL"] = f"sqlite:///{tmp_path}/serve.db"
    return subprocess.run(
        [sys.executable, "-m", "dataworkflows.cli.main", "serve", *args],
        env=environ | {f"DATAWORKFLOWS_{k.upper()}": v for k, v in env.items()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_loose_mode_off_loopback(tmp_path: Any) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("example.com")
    result = serve(tmp_path, "--host", "0.0.0.0", "--port", "1", auth_mode="loose")
    assert result.returncode == 1
    assert "refusing to serve auth mode 'loose' on 0.0.0.0" in result.stderr
    assert "--allow-loose-public" in result.stderr
    # allowed explicitly, or strict: no refusal
    refuse_loose_public(Settings(host="0.0.0.0", allow_loose_public=True))
    refuse_loose_public(Settings(host="0.0.0.0", auth_mode="strict"))


async def test_loose_mode_warns_at_start_up(kernel, api_factory, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="dataworkflows.api.auth"):
        await api_factory(kernel, run_worker=False)
    assert any("auth mode is 'loose'" in r.getMessage() for r in caplog.records)


async def test_strict_streams_show_only_the_tokens_tenant(kernel_factory, api_factory) -> None:
    kernel = await kernel_factory(auth_mode="strict")
    api = await api_factory(kernel)
    acme = bearer(await api_token(kernel, tenant="acme", role="runner"))
    globex = bearer(await api_token(kernel, tenant="globex", role="runner"))
    for tenant in ("acme", "globex"):
        definition = {
            "id": f"sse-{tenant}",
            "displayName": tenant,
            "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": "x"}}],
        }
        await kernel.service.apply(definition, tenant_id=tenant)
    acme_response, acme_reader = await open_stream(api, headers=acme)
    globex_response, globex_reader = await open_stream(api, headers=globex)
    runs = {}
    for tenant, headers in (("acme", acme), ("globex", globex)):
        resp = await api.post(f"/api/v1/workflows/sse-{tenant}/execute", json={}, headers=headers)
        assert resp.status == 202, await resp.text()
        runs[tenant] = (await resp.json())["executionId"]
    acme_frames = await acme_reader.events_until("RunSucceeded")
    globex_frames = await globex_reader.events_until("RunSucceeded")
    assert {f.data["executionId"] for f in acme_frames} == {runs["acme"]}
    assert {f.data["executionId"] for f in globex_frames} == {runs["globex"]}
    acme_response.close()
    globex_response.close()
    # headers cannot widen it: another tenant's run is 404, X-Tenant-Id of another is 403
    resp = await api.get(
        "/api/v1/events/stream", params={"executionId": runs["acme"]}, headers=globex
    )
    assert resp.status == 404
    resp = await api.get("/api/v1/events/stream", headers=globex | {"X-Tenant-Id": "acme"})
    assert resp.status == 403
    async with kernel.db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(api_tokens))).scalar() == 2


def test_unreadable_jwt_keys_are_a_clear_start_up_error(tmp_path: Any) -> None:
    (tmp_path / "jwks.json").write_text("{not json")
    result = serve(tmp_path, "--port", "1", auth_mode="strict", jwt_jwks=f"{tmp_path}/jwks.json")
    assert result.returncode == 1
    assert "DATAWORKFLOWS_JWT_JWKS=" in result.stderr and "not a readable JWKS" in result.stderr
    missing = f"{tmp_path}/missing.pem"
    result = serve(tmp_path, "--port", "1", auth_mode="strict", jwt_public_key_file=missing)
    assert result.returncode == 1 and "not a readable PEM public key" in result.stderr


async def test_loose_mode_ignores_a_proxys_basic_authorization(api) -> None:
    resp = await api.get(
        "/api/v1/workflows", headers={"Authorization": "Basic eDp5", "X-Tenant-Id": "acme"}
    )
    assert resp.status == 200, await resp.text()
