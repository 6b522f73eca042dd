"""Strict mode's credentials (docs/auth.md): API tokens, JWTs (HS256, RS256 key file, ES256
JWKS file and URL), claims and clock skew, the identity on the request, loose mode's
header checks. The route-by-route matrix is tests/test_auth_matrix.py."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from dataworkflows import hookimpl, requires
from dataworkflows.api.auth import IDENTITY_KEY
from dataworkflows.common.clock import FakeClock
from dataworkflows.service.api_tokens import TokenStore, api_tokens
from dataworkflows.testing.auth import api_token, bearer, jwt_token

SECRET = "a-test-secret-of-at-least-32-bytes!!"
AUD, ISS = "dataworkflows", "https://issuer.example"


class IdentityRoutes:
    """A plugin's routes: one declaring ``viewer`` (echoes the identity), one undeclared."""

    @hookimpl
    def register_routes(self, app: Any, kernel: Any) -> None:
        @requires("viewer")
        async def whoami(request: web.Request) -> web.Response:
            who = request[IDENTITY_KEY]
            return web.json_response(
                {
                    "tenant": who.tenant,
                    "principal": who.principal,
                    "role": who.role,
                    "method": who.method,
                    "tokenId": who.token_id,
                }
            )

        async def undeclared(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app.router.add_get("/plugin/whoami", whoami)
        app.router.add_get("/plugin/undeclared", undeclared)


async def strict_api(kernel_factory: Any, api_factory: Any, **settings: Any) -> tuple[Any, Any]:
    values = {"jwt_secret": SECRET, "jwt_audience": AUD, "jwt_issuer": ISS}
    kernel = await kernel_factory(
        auth_mode="strict", plugins=[IdentityRoutes()], **(values | settings)
    )
    return await api_factory(kernel, run_worker=False), kernel


def signed(**kwargs: Any) -> dict[str, str]:
    return bearer(jwt_token(SECRET, **({"audience": AUD, "issuer": ISS} | kwargs)))


async def status(api: Any, path: str, headers: dict[str, str] | None = None) -> int:
    resp = await api.get(path, headers=headers or {})
    return int(resp.status)


async def test_without_a_token_only_public_routes_answer(kernel_factory, api_factory):
    api, _ = await strict_api(kernel_factory, api_factory)
    resp = await api.get("/api/v1/workflows", headers={"X-Tenant-Id": "acme"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert body["code"] == "unauthenticated" and "Authorization: Bearer" in body["message"]
    assert await status(api, "/health") == 200
    assert await status(api, "/api/v1/openapi.json") == 200
    assert await status(api, "/plugin/undeclared") == 401
    resp = await api.get("/api/v1/workflows", headers={"Authorization": "Basic eDp5"})
    assert (resp.status, (await resp.json())["code"]) == (401, "invalid_token")


async def test_api_tokens_are_random_hashed_and_refused_once_revoked_or_expired(
    kernel_factory, api_factory
):
    api, kernel = await strict_api(kernel_factory, api_factory)
    store = TokenStore(kernel.db, kernel.clock)
    made = await store.create(tenant="acme", role="viewer", name="ci")
    other = await store.create(tenant="acme", role="viewer", name="ci")
    assert made.token.startswith("dwt_") and len(made.token) >= 4 + 43
    assert made.token != other.token
    async with kernel.db.connect() as conn:
        rows = (await conn.execute(select(api_tokens))).all()
    assert {r.token_hash for r in rows} == {
        hashlib.sha256(t.encode()).hexdigest() for t in (made.token, other.token)
    }
    assert made.token not in json.dumps([list(map(str, r)) for r in rows])

    who = await (await api.get("/plugin/whoami", headers=bearer(made.token))).json()
    assert who == {
        "tenant": "acme",
        "principal": "token:ci",
        "role": "viewer",
        "method": "token",
        "tokenId": made.view["id"],
    }
    assert await status(api, "/api/v1/workflows", bearer(made.token + "x")) == 401
    await store.revoke(made.view["id"])
    resp = await api.get("/api/v1/workflows", headers=bearer(made.token))
    assert (resp.status, (await resp.json())["code"]) == (401, "invalid_token")
    assert await status(api, "/api/v1/workflows", bearer(other.token)) == 200

    past = FakeClock(datetime.now(UTC) - timedelta(days=1))
    expired = await api_token(
        kernel, tenant="acme", role="admin", expires_in=timedelta(hours=1), clock=past
    )
    assert await status(api, "/api/v1/workflows", bearer(expired)) == 401
    fresh = await api_token(kernel, tenant="acme", role="admin", expires_in=timedelta(hours=1))
    assert await status(api, "/api/v1/workflows", bearer(fresh)) == 200


async def test_bad_token_requests_are_refused_and_write_nothing(kernel_factory):
    kernel = await kernel_factory()
    store = TokenStore(kernel.db, kernel.clock)
    for tenant, role, name in (("../etc", "admin", "x"), ("acme", "root", "x"), ("acme", "x", "")):
        with pytest.raises(Exception) as caught:
            await store.create(tenant=tenant, role=role, name=name)
        assert getattr(caught.value, "code", None) == "invalid_token_request"
    assert await store.list() == []


async def test_jwt_claims_are_checked(kernel_factory, api_factory):
    api, _ = await strict_api(kernel_factory, api_factory, jwt_leeway_seconds=30)
    ok = await (await api.get("/plugin/whoami", headers=signed(tenant="acme"))).json()
    assert (ok["tenant"], ok["principal"], ok["role"], ok["method"]) == (
        "acme",
        "alice",
        "admin",
        "jwt",
    )
    assert ok["tokenId"]  # the jti
    refused = {
        "wrong audience": signed(tenant="acme", audience="someone-else"),
        "no audience": signed(tenant="acme", audience=None),
        "wrong issuer": signed(tenant="acme", issuer="https://evil.example"),
        "expired beyond the skew": signed(tenant="acme", expires_in=-120),
        "not yet valid": signed(tenant="acme", not_before_in=120),
        "wrong secret": bearer(jwt_token("another-secret-of-32-bytes-or-more!", tenant="acme")),
        "bad tenant": signed(tenant="../../etc"),
        "no tenant": bearer(jwt.encode({"sub": "a", "exp": time.time() + 60}, SECRET)),
        "bad role": signed(tenant="acme", role="root"),
        "alg none": bearer(
            jwt.encode(
                {
                    "sub": "a",
                    "tenant": "acme",
                    "role": "admin",
                    "aud": AUD,
                    "iss": ISS,
                    "exp": int(time.time()) + 60,
                },
                None,
                algorithm="none",
            )
        ),
        "garbage": bearer("not-a-jwt"),
    }
    for what, headers in refused.items():
        resp = await api.get("/api/v1/workflows", headers=headers)
        assert resp.status == 401, what
        assert (await resp.json())["code"] == "invalid_token", what
    # within the bounded skew
    assert await status(api, "/api/v1/workflows", signed(tenant="acme", expires_in=-10)) == 200
    assert await status(api, "/api/v1/workflows", signed(tenant="acme", not_before_in=10)) == 200


async def test_tenant_and_principal_come_from_the_token(kernel_factory, api_factory, simple_echo):
    api, _ = await strict_api(kernel_factory, api_factory)
    acme = signed(tenant="acme", role="editor", subject="bob")
    resp = await api.post(
        "/api/v1/workflows", json=simple_echo, headers=acme | {"X-Principal": "x"}
    )
    assert resp.status == 201, await resp.text()
    audit = await (await api.get("/api/v1/workflows/simple-echo/audit", headers=acme)).json()
    assert {a["actor"] for a in audit["items"]} == {"bob"}
    resp = await api.get("/api/v1/workflows", headers=acme | {"X-Tenant-Id": "globex"})
    assert (resp.status, (await resp.json())["code"]) == (403, "tenant_mismatch")
    assert await status(api, "/api/v1/workflows", acme | {"X-Tenant-Id": "acme"}) == 200
    resp = await api.get("/api/v1/workflows", headers=acme | {"X-Tenant-Id": "../../etc"})
    assert (resp.status, (await resp.json())["code"]) == (400, "invalid_header")
    globex = signed(tenant="globex", role="admin")
    assert await status(api, "/api/v1/workflows/simple-echo", globex) == 404


async def test_roles_and_undeclared_routes(kernel_factory, api_factory):
    api, _ = await strict_api(kernel_factory, api_factory)
    resp = await api.post(
        "/api/v1/workflows", json={}, headers=signed(tenant="acme", role="runner")
    )
    body = await resp.json()
    assert (resp.status, body["code"]) == (403, "forbidden")
    assert body["details"] == {"requiredRole": "editor", "role": "runner"}
    assert await status(api, "/plugin/undeclared", signed(tenant="acme", role="editor")) == 403
    assert await status(api, "/plugin/undeclared", signed(tenant="acme", role="admin")) == 200


def _pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid, "alg": alg}


async def test_rs256_with_a_public_key_file(kernel_factory, api_factory, tmp_path: Path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "pub.pem").write_bytes(_pem_public(key))
    api, _ = await strict_api(
        kernel_factory, api_factory, jwt_public_key_file=str(tmp_path / "pub.pem")
    )
    good = jwt_token(key, tenant="acme", audience=AUD, issuer=ISS, algorithm="RS256")
    assert await status(api, "/api/v1/workflows", bearer(good)) == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt_token(other, tenant="acme", audience=AUD, issuer=ISS, algorithm="RS256")
    assert await status(api, "/api/v1/workflows", bearer(forged)) == 401
    # HS256 signed with the public key's PEM (algorithm confusion) is refused
    confused = jwt_token(SECRET + "x", tenant="acme", audience=AUD, issuer=ISS, algorithm="HS256")
    assert await status(api, "/api/v1/workflows", bearer(confused)) == 401


async def test_es256_with_a_jwks_file_and_url(kernel_factory, api_factory, tmp_path: Path):
    ec_key, rsa_key = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    jwks = {"keys": [_jwk(ec_key, "ec-1", "ES256"), _jwk(rsa_key, "rsa-1", "RS256")]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    api, _ = await strict_api(kernel_factory, api_factory, jwt_jwks=str(tmp_path / "jwks.json"))
    for key, kid, alg in ((ec_key, "ec-1", "ES256"), (rsa_key, "rsa-1", "RS256")):
        token = jwt_token(key, tenant="acme", audience=AUD, issuer=ISS, algorithm=alg, kid=kid)
        assert await status(api, "/api/v1/workflows", bearer(token)) == 200, alg
    unknown = jwt_token(
        ec_key, tenant="acme", audience=AUD, issuer=ISS, algorithm="ES256", kid="nope"
    )
    assert await status(api, "/api/v1/workflows", bearer(unknown)) == 401

    served = []

    async def jwks_handler(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.json_response(jwks)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks_handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/.well-known/jwks.json"))
        api2, _ = await strict_api(kernel_factory, api_factory, jwt_jwks=url)
        token = jwt_token(
            ec_key, tenant="acme", audience=AUD, issuer=ISS, algorithm="ES256", kid="ec-1"
        )
        assert await status(api2, "/api/v1/workflows", bearer(token)) == 200
        assert await status(api2, "/api/v1/workflows", bearer(token)) == 200
        assert served == ["/.well-known/jwks.json"]  # fetched once, then cached
    finally:
        await server.close()
    # the JWKS server is gone and the cache of a new app is empty: 503, not a pass
    api3, _ = await strict_api(kernel_factory, api_factory, jwt_jwks=url)
    resp = await api3.get("/api/v1/workflows", headers=bearer(token))
    assert (resp.status, (await resp.json())["code"]) == (503, "jwks_unavailable")


async def test_metrics_take_the_scrape_token_in_strict_mode(kernel_factory, api_factory):
    api, kernel = await strict_api(kernel_factory, api_factory, scrape_token="scrape-me-please")
    admin = await api_token(kernel, tenant="acme", role="admin")
    assert await status(api, "/metrics") == 401
    assert await status(api, "/metrics", bearer(admin)) == 401  # a tenant's token: no
    assert await status(api, "/metrics", bearer("scrape-me-please")) == 200
    api2, _ = await strict_api(kernel_factory, api_factory)  # no scrape token set
    resp = await api2.get("/metrics", headers=bearer("anything"))
    assert (resp.status, (await resp.json())["code"]) == (401, "scrape_token_not_configured")


async def test_loose_mode_checks_tenant_ids_and_honours_a_bearer_token(api, kernel):
    resp = await api.get("/api/v1/workflows", headers={"X-Tenant-Id": "../../etc"})
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "invalid_header")
    assert "X-Tenant-Id" in body["message"] and body["details"]["pattern"]
    token = await api_token(kernel, tenant="acme", role="viewer")
    resp = await api.post("/api/v1/workflows", json={}, headers=bearer(token))
    assert resp.status == 403  # the token's role, not loose mode's admin
    assert await status(api, "/metrics") == 200


async def test_the_document_and_its_page_show_each_operations_role(api):
    document = await (await api.get("/api/v1/openapi.json")).json()
    create = document["paths"]["/api/v1/workflows"]["post"]
    assert create["x-required-role"] == "editor"
    assert create["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(create["responses"])
    health = document["paths"]["/health"]["get"]
    assert (health["security"], health["x-required-role"]) == ([], "public")
    assert document["paths"]["/metrics"]["get"]["security"] == [{"scrapeToken": []}]
    assert document["paths"]["/hooks/{trigger_id}"]["post"]["x-required-role"] == "public"
    page = await (await api.get("/api/v1/docs")).text()
    assert "Needs: <code>editor</code>" in page
