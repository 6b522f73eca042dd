"""API rate limits per tenant and per principal (docs/limits.md): 429 with Retry-After,
nothing done for a refused request, and one bucket shared by every API process on
PostgreSQL.

The limits here refill at 0.001 per second, so within a test a bucket only empties:
the counts below do not depend on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from sqlalchemy import func, select

from dataworkflows.api.auth import IDENTITY_KEY
from dataworkflows.api.rate_limit_middleware import rate_limit_identity
from dataworkflows.common.access import Identity
from dataworkflows.db.models import workflow_executions
from dataworkflows.service.rate_limits import (
    Limit,
    LocalBuckets,
    RateLimiter,
    SharedBuckets,
    _grant,
)
from dataworkflows.settings import Settings, SettingsError
from dataworkflows.testing import postgres_only
from tests.test_serve_workers import serve  # noqa: F401 (fixture: real `serve` processes)

SLOW = 0.001  # requests per second: no refill within a test


async def statuses(client: Any, count: int, **headers: str) -> list[int]:
    out = []
    for _ in range(count):
        resp = await client.get("/api/v1/workflows", headers=headers)
        out.append(resp.status)
    return out


def test_gcra_grants_a_burst_then_refuses_until_one_interval_has_passed() -> None:
    limit = Limit(per_second=2.0, burst=3)  # one every 0.5 s, three at once
    granted, tat, _ = _grant(tat=100.0, now=100.0, wanted=5, limit=limit)
    assert (granted, tat) == (3, 101.5)
    granted, tat2, retry_after = _grant(tat=tat, now=100.0, wanted=1, limit=limit)
    assert (granted, tat2) == (0, 101.5) and retry_after == pytest.approx(0.5)
    granted, _, _ = _grant(tat=tat, now=100.5, wanted=2, limit=limit)
    assert granted == 1
    assert Limit.of(0, 10) is None  # off
    assert Limit.of(2.5, 0) == Limit(2.5, 3)  # burst 0: one second's worth


async def test_local_buckets_refuse_over_the_burst() -> None:
    buckets = LocalBuckets()
    limit = Limit(SLOW, 4)
    assert await buckets.reserve([("k", 3, limit)]) == [(3, 0.0)]
    assert (await buckets.reserve([("k", 3, limit)]))[0][0] == 1
    [(granted, retry_after)] = await buckets.reserve([("k", 1, limit)])
    assert granted == 0 and retry_after > 900  # one interval: 1000 s
    assert (await buckets.reserve([("other", 1, limit)]))[0][0] == 1


async def test_a_tenant_over_its_limit_gets_429_with_retry_after(kernel_factory, api_factory):
    kernel = await kernel_factory(rate_limit_tenant_per_second=SLOW, rate_limit_tenant_burst=3)
    client = await api_factory(kernel)
    began = time.monotonic()
    assert await statuses(client, 4, **{"X-Tenant-Id": "a"}) == [200, 200, 200, 429]
    resp = await client.get("/api/v1/workflows", headers={"X-Tenant-Id": "a"})
    assert resp.status == 429
    # the next request is one interval (1000 s) after the bucket emptied, less the time since
    waited = math.ceil(time.monotonic() - began)
    assert math.ceil(1 / SLOW) - waited <= int(resp.headers["Retry-After"]) <= math.ceil(1 / SLOW)
    body = await resp.json()
    assert body["code"] == "rate_limited"
    assert body["details"]["scope"] == "tenant"
    assert body["details"]["limit"] == {"perSecond": SLOW, "burst": 3}
    # another tenant has its own bucket; /health is never limited
    assert await statuses(client, 3, **{"X-Tenant-Id": "b"}) == [200, 200, 200]
    assert (await client.get("/health")).status == 200


async def test_each_principal_has_its_own_bucket(kernel_factory, api_factory):
    kernel = await kernel_factory(
        rate_limit_principal_per_second=SLOW, rate_limit_principal_burst=2
    )
    client = await api_factory(kernel)
    assert await statuses(client, 3, **{"X-Principal": "alice"}) == [200, 200, 429]
    assert await statuses(client, 2, **{"X-Principal": "bob"}) == [200, 200]
    # the same principal name in another tenant is another key
    assert await statuses(client, 1, **{"X-Principal": "alice", "X-Tenant-Id": "t2"}) == [200]
    resp = await client.get("/api/v1/workflows", headers={"X-Principal": "bob"})
    assert (await resp.json())["details"]["scope"] == "principal"
    # public routes have no caller: never limited, even while every caller is refused
    for _ in range(4):
        assert (await client.get("/api/v1/openapi.json")).status == 200


async def test_a_refused_request_changes_nothing(kernel_factory, api_factory, simple_echo):
    kernel = await kernel_factory(rate_limit_tenant_per_second=SLOW, rate_limit_tenant_burst=2)
    client = await api_factory(kernel)
    resp = await client.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    assert resp.status == 201
    first = await client.post("/api/v1/workflows/simple-echo/execute", json={"trigger": {}})
    assert first.status == 202
    refused = await client.post("/api/v1/workflows/simple-echo/execute", json={"trigger": {}})
    assert refused.status == 429
    async with kernel.db.connect() as conn:
        runs = (await conn.execute(select(func.count()).select_from(workflow_executions))).scalar()
    assert runs == 1


def test_the_identity_prefers_the_authenticated_one() -> None:
    public = make_mocked_request("GET", "/api/v1/openapi.json", headers={"X-Tenant-Id": "acme"})
    assert rate_limit_identity(public) is None  # a public route: not limited
    loose = make_mocked_request("GET", "/api/v1/workflows", headers={"X-Tenant-Id": "spoof"})
    loose[IDENTITY_KEY] = Identity("acme", "ann", "editor", "headers")
    assert rate_limit_identity(loose) == ("acme", "ann")
    strict = make_mocked_request("GET", "/api/v1/workflows", headers={"X-Tenant-Id": "spoof"})
    strict[IDENTITY_KEY] = Identity("acme", "ann", "runner", "token", "tok_1")
    assert rate_limit_identity(strict) == ("acme", "tok_1")
    jwt = make_mocked_request("GET", "/api/v1/workflows")
    jwt[IDENTITY_KEY] = Identity("acme", None, "viewer", "jwt")
    assert rate_limit_identity(jwt) == ("acme", "-")


@pytest.mark.parametrize(
    "name", ["DATAWORKFLOWS_RATE_LIMIT_TENANT_PER_SECOND", "DATAWORKFLOWS_RATE_LIMIT_TENANT_BURST"]
)
def test_negative_limits_are_refused_at_start(name: str) -> None:
    with pytest.raises(SettingsError, match="negative"):
        Settings.from_env({name: "-1"})


@postgres_only
async def test_two_api_processes_share_one_bucket(kernel_factory, api_factory):
    """Two app instances, each with its own kernel (pool, limiter, local reservations),
    on one PostgreSQL database: together they let the burst through, not one each."""
    limits = {"rate_limit_tenant_per_second": SLOW, "rate_limit_tenant_burst": 10}
    one = await api_factory(await kernel_factory(**limits))
    two = await api_factory(await kernel_factory(**limits))
    headers = {"X-Tenant-Id": "shared"}

    async def get(client: Any) -> int:
        return (await client.get("/api/v1/workflows", headers=headers)).status

    # concurrently, from both processes
    results = await asyncio.gather(*(get(one if i % 2 else two) for i in range(30)))
    assert results.count(200) == 10
    assert results.count(429) == 20
    # and both keep refusing
    assert await get(one) == 429 and await get(two) == 429


@postgres_only
async def test_shared_buckets_reserve_up_to_the_burst(kernel):
    buckets = SharedBuckets(kernel.db)
    limit = Limit(SLOW, 8)
    other = Limit(SLOW, 2)
    assert await buckets.reserve([("t:b", 5, limit), ("t:a", 1, other)]) == [(5, 0.0), (1, 0.0)]
    [(three, _), (one, _)] = await buckets.reserve([("t:b", 5, limit), ("t:a", 5, other)])
    assert (three, one) == (3, 1)
    [(granted, retry_after)] = await buckets.reserve([("t:b", 1, limit)])
    assert granted == 0 and 900 < retry_after <= 1000


@pytest.mark.parametrize("reserve_seconds", [0.0, 5.0])
async def test_a_request_refused_by_one_bucket_takes_nothing_from_the_other(reserve_seconds):
    limiter = RateLimiter(LocalBuckets(), reserve_seconds=reserve_seconds)
    tenant, principal = Limit(SLOW, 3), Limit(SLOW, 1)
    both = [("principal", principal), ("tenant", tenant)]
    assert await limiter.check(both) is None
    refused = await limiter.check(both)
    assert refused is not None and refused[0] == 0  # the principal's bucket is empty
    # the tenant's bucket still has 2: another principal of the tenant gets both
    others = [("principal-2", Limit(SLOW, 5)), ("tenant", tenant)]
    answers = [await limiter.check(others) for _ in range(3)]
    assert answers[:2] == [None, None]
    assert answers[2] is not None and answers[2][0] == 1  # now the tenant's is empty


async def test_concurrent_requests_of_one_key_share_one_reservation():
    class Counting(LocalBuckets):
        calls = 0

        async def reserve(self, wants):
            Counting.calls += 1
            await asyncio.sleep(0)  # let the other requests queue behind the lock
            return await super().reserve(wants)

    limiter = RateLimiter(Counting(), reserve_seconds=60.0)
    limit = Limit(1.0, 50)  # a reservation: 50 requests (rate x 60 s, capped at the burst)
    results = await asyncio.gather(*(limiter.check([("k", limit)]) for _ in range(40)))
    assert results == [None] * 40
    assert Counting.calls == 1


@postgres_only
def test_two_serve_processes_share_one_bucket(serve: Any) -> None:  # noqa: F811
    """Two real ``dataworkflows serve`` processes on one PostgreSQL database: 30 requests
    sent to both at once, alternating, get the tenant's burst of 10 through in all."""
    limits = {
        "rate_limit_tenant_per_second": str(SLOW),
        "rate_limit_tenant_burst": "10",
        "serve_workers": "0",
    }
    one, two = serve(**limits), serve(**limits)
    with ThreadPoolExecutor(10) as pool:
        statuses = list(
            pool.map(
                lambda i: (one if i % 2 else two).request("GET", "/api/v1/workflows")[0],
                range(30),
            )
        )
    assert (statuses.count(200), statuses.count(429)) == (10, 20), statuses
    assert one.request("GET", "/api/v1/workflows")[0] == 429
    assert two.request("GET", "/api/v1/workflows")[0] == 429
