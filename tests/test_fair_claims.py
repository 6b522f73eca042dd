"""Fair claiming and per-tenant concurrency caps (docs/limits.md).

The claim takes each tenant's runs by their *place* (position in the tenant's queue plus
its runs already running), so one tenant's backlog cannot hold another tenant's run back.
The timing figure (20,000 queued runs) is in ``benchmarks/fairness.py``; these tests check
the order, not the speed.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from dataworkflows.db.models import workflow_executions
from dataworkflows.settings import Settings, SettingsError


def echo(workflow_id: str, **parameters: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [
            {
                "id": "only",
                "actionType": "core.echo",
                "parameters": {"message": "x", **parameters},
                "retry": {"maxAttempts": 1},
            }
        ],
    }


async def queue(kernel: Any, tenant: str, count: int, workflow: str | None = None) -> list[str]:
    ids = []
    for i in range(count):
        summary, _ = await kernel.service.execute(
            workflow or f"wf-{tenant}", trigger={"i": i}, tenant_id=tenant
        )
        ids.append(summary["executionId"])
    return ids


async def setup(kernel: Any, *tenants: str, **parameters: Any) -> None:
    for tenant in tenants:
        await kernel.service.apply(echo(f"wf-{tenant}", **parameters), tenant_id=tenant)


async def test_a_run_of_another_tenant_is_in_the_first_claim_after_a_backlog(kernel):
    await setup(kernel, "a", "b")
    await queue(kernel, "a", 300)
    # a worker already holds some of a's runs
    held = await kernel.ledger.claim_many("busy", 3)
    assert {run.tenant_id for run in held} == {"a"}
    (b_run,) = await queue(kernel, "b", 1)
    first = await kernel.ledger.claim("w")  # a batch of one: b's run, not a's oldest
    assert first is not None and str(first.id) == b_run


async def test_a_claim_takes_tenants_round_robin(kernel):
    await setup(kernel, "a", "b", "c")
    await queue(kernel, "a", 10)
    await queue(kernel, "b", 10)
    await queue(kernel, "c", 1)
    batch = await kernel.ledger.claim_many("w", 6)
    # places 1 (a, b, c), 2 (a, b), 3 (a: older than b's third)
    assert Counter(run.tenant_id for run in batch) == {"a": 3, "b": 2, "c": 1}
    # the next batch: a has 3 running, b 2, c none waiting: b's third comes first
    following = await kernel.ledger.claim_many("w", 1)
    assert [run.tenant_id for run in following] == ["b"]


async def test_within_a_tenant_runs_are_claimed_oldest_first(kernel):
    await setup(kernel, "a")
    ids = await queue(kernel, "a", 5)
    taken = [str(run.id) for run in await kernel.ledger.claim_many("w", 5)]
    assert sorted(taken, key=ids.index) == ids
    assert {str(r.id) for r in await kernel.ledger.claim_many("w", 5)} == set()


async def test_a_tenant_cap_bounds_its_running_runs(kernel_factory):
    kernel = await kernel_factory(tenant_max_running=2, tenant_max_running_overrides="b=1,c=0")
    await setup(kernel, "a", "b", "c")
    await queue(kernel, "a", 5)
    await queue(kernel, "b", 5)
    await queue(kernel, "c", 5)
    batch = await kernel.ledger.claim_many("w", 20)
    assert Counter(run.tenant_id for run in batch) == {"a": 2, "b": 1, "c": 5}
    assert await kernel.ledger.claim_many("w", 20) == []  # the caps hold
    from dataworkflows.ledger.run_ledger import RunFinish

    done = next(run for run in batch if run.tenant_id == "a")
    await kernel.ledger.finish(done, RunFinish("Succeeded"))
    again = await kernel.ledger.claim_many("w", 20)
    assert [run.tenant_id for run in again] == ["a"]  # a slot of a's cap came free


async def test_a_capped_tenant_never_runs_more_at_once_even_when_queued_here(kernel_factory):
    """The enqueue fast path (a free slot here takes the run at once) is off under caps:
    only the claim, which counts running runs, starts runs."""
    kernel = await kernel_factory(tenant_max_running=1, worker_concurrency=4)
    await setup(kernel, "a", delayMs=150)
    kernel.start_worker()
    ids = await queue(kernel, "a", 3)
    for run_id in ids:
        assert await kernel.ledger.wait_until_final(uuid.UUID(run_id), 30) == "Succeeded"
    async with kernel.db.connect() as conn:
        spans = sorted(
            (
                await conn.execute(
                    select(workflow_executions.c.started_at, workflow_executions.c.ended_at)
                )
            ).all()
        )
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended  # one at a time


async def test_a_tenant_whose_runs_all_fail_does_not_hold_others_back(kernel_factory):
    """Poisoned tenant: every run of a fails; b's runs, queued behind a's backlog, run
    while a's backlog is still being worked off, and succeed."""
    kernel = await kernel_factory(worker_concurrency=2)
    await kernel.service.apply(
        echo("wf-a", failAlways=True, failureKind="permanent", delayMs=20), tenant_id="a"
    )
    await setup(kernel, "b")
    a_runs = await queue(kernel, "a", 30)
    b_runs = await queue(kernel, "b", 3)
    kernel.start_worker()
    for run_id in a_runs + b_runs:
        await kernel.ledger.wait_until_final(uuid.UUID(run_id), 60)
    runs = {run_id: await kernel.service.get_execution(run_id) for run_id in a_runs + b_runs}
    assert {runs[r]["status"] for r in a_runs} == {"Failed"}
    assert {runs[r]["status"] for r in b_runs} == {"Succeeded"}
    last_a_start = max(runs[r]["startedAt"] for r in a_runs)
    assert all(runs[r]["startedAt"] < last_a_start for r in b_runs)


@pytest.mark.parametrize(
    "value",
    ["a", "a=", "=3", "a=-1", "a=x", "a b=1", "a=1;b=2"],
)
def test_bad_tenant_cap_overrides_are_refused_at_start(value):
    with pytest.raises(SettingsError, match="TENANT_MAX_RUNNING_OVERRIDES"):
        Settings(tenant_max_running_overrides=value)


def test_tenant_cap_settings_are_read_from_the_environment():
    settings = Settings.from_env(
        {
            "DATAWORKFLOWS_TENANT_MAX_RUNNING": "3",
            "DATAWORKFLOWS_TENANT_MAX_RUNNING_OVERRIDES": "acme=10, globex=0",
        }
    )
    from dataworkflows.ledger.fairness import TenantCaps

    caps = TenantCaps.from_settings(settings)
    assert caps is not None
    assert (caps.cap_for("acme"), caps.cap_for("globex"), caps.cap_for("x")) == (10, None, 3)
    assert TenantCaps.from_settings(Settings()) is None
    with pytest.raises(SettingsError, match="must not be negative"):
        Settings.from_env({"DATAWORKFLOWS_TENANT_MAX_RUNNING": "-1"})


async def test_claims_by_two_claimers_at_once_never_share_a_run(kernel):
    await setup(kernel, "a", "b")
    await queue(kernel, "a", 20)
    await queue(kernel, "b", 20)
    batches = await asyncio.gather(*(kernel.ledger.claim_many(f"w{i}", 5) for i in range(4)))
    ids = [run.id for batch in batches for run in batch]
    assert len(ids) == len(set(ids)) == 20
