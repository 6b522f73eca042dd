"""Fair claiming under a backlog (issue 17, item 6): how soon does tenant B's run start
while tenant A has ``--backlog`` (20,000) runs queued?

``python -m benchmarks.fairness [--pg-url URL] [--backlog 20000] [--probes 20]``

On a scratch PostgreSQL database (``<admin database>_fairness``, dropped afterwards):

1. tenant A queues ``--backlog`` runs of a 1-step ``core.echo`` workflow that waits
   ``--step-ms`` (50) ms, through the ordinary enqueue path (a kernel with no worker);
2. ``VACUUM ANALYZE`` of the runs table (what autovacuum does after such an insert), then
   the claim statement's plan is printed (``EXPLAIN (ANALYZE, BUFFERS)``, rolled back);
3. a second kernel in the same process starts its worker (``--concurrency`` 8 slots):
   every slot is busy with A's runs from then on;
4. every ``--probe-interval`` (0.5) s the first kernel queues one run of tenant B (a
   1-step ``core.echo``) and waits for it to end. Its wait is the ledger's
   ``started_at - created_at`` (both taken by the kernels' clock inside their writes).
   The enqueuing kernel has no worker, so B's run always goes through the claim path.

The target: every B run starts within 1 s (``ok``). Without fair claiming (oldest first)
B's run would wait for A's whole backlog ahead of it: ``backlog x step / concurrency``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from benchmarks import pg
from benchmarks.common import latency_summary, loadavg

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_S = 1.0


def _definition(workflow_id: str, delay_ms: int) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": f"Benchmark: fairness ({workflow_id})",
        "nodes": [
            {
                "id": "work",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.i }}", "delayMs": delay_ms},
            }
        ],
    }


def _kernel(url: str, concurrency: int) -> Any:
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    settings = Settings(
        database_url=url,
        auto_migrate=True,
        secret_key="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        worker_concurrency=concurrency,
        poll_interval=1.0,
        step_started_after_seconds=-1,
        prune_interval_seconds=0,
    )
    return Kernel(settings, entrypoints=True)


async def _queue_backlog(kernel: Any, count: int) -> float:
    started = time.monotonic()
    window = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        async with window:
            await kernel.service.execute("fair-a", trigger={"i": i}, tenant_id="tenant-a")

    await asyncio.gather(*(one(i) for i in range(count)))
    return time.monotonic() - started


async def explain_claim(kernel: Any, limit: int) -> list[str]:
    """The claim's plan on the current queue (executed, then rolled back)."""
    now = kernel.clock.now()
    statement = kernel.ledger._claim_statement
    async with kernel.db.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect)
        params = compiled.construct_params(
            {"p_now": now, "p_owner": "explain", "p_lease_until": now, "p_limit": limit}
        )
        rows = await conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + str(compiled), params
        )
        plan = [row[0] for row in rows]
        await conn.rollback()
    return plan


async def _pending(kernel: Any, tenant: str) -> int:
    from sqlalchemy import func, select

    from dataworkflows.db.models import workflow_executions as t

    async with kernel.db.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).where(t.c.tenant_id == tenant, t.c.status == "Pending")
                )
            ).scalar_one()
        )


async def _probe(kernel: Any, i: int) -> float:
    summary, _ = await kernel.service.execute("fair-b", trigger={"i": i}, tenant_id="tenant-b")
    run_id = uuid.UUID(summary["executionId"])
    status = await kernel.ledger.wait_until_final(run_id, 60)
    if status != "Succeeded":
        raise RuntimeError(f"tenant B's run {run_id} ended {status}")
    run = await kernel.service.get_execution(str(run_id), tenant_id="tenant-b")
    from datetime import datetime

    created = datetime.fromisoformat(run["createdAt"].replace("Z", "+00:00"))
    started = datetime.fromisoformat(run["startedAt"].replace("Z", "+00:00"))
    return (started - created).total_seconds()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{pg.admin_database(args.pg_url)}_fairness"
    pg.create_database(args.pg_url, name)
    url = pg.database_url(args.pg_url, name)
    result: dict[str, Any] = {
        "workload": "fairness",
        "backend": "postgresql",
        "config": {
            "backlog": args.backlog,
            "probes": args.probes,
            "concurrency": args.concurrency,
            "step_ms": args.step_ms,
        },
        "loadavg_before": loadavg(),
    }
    intake = _kernel(url, args.concurrency)
    worker = _kernel(url, args.concurrency)
    try:
        await intake.start()
        await intake.service.apply(_definition("fair-a", args.step_ms), tenant_id="tenant-a")
        await intake.service.apply(_definition("fair-b", 0), tenant_id="tenant-b")
        result["backlog_queue_s"] = round(await _queue_backlog(intake, args.backlog), 1)
        async with intake.db.connect() as conn:  # as autovacuum would after such an insert
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE workflow_executions")
        result["claim_plan"] = await explain_claim(intake, args.concurrency)
        await worker.start()
        worker.start_worker()
        await asyncio.sleep(1.0)  # let the worker fill its slots with tenant A's runs
        result["a_pending_before"] = await _pending(intake, "tenant-a")
        waits = []
        for i in range(args.probes):
            waits.append(await _probe(intake, i))
            await asyncio.sleep(args.probe_interval)
        result["a_pending_after"] = await _pending(intake, "tenant-a")
        result["b_start_wait"] = latency_summary(waits)
        result["b_start_wait_max_s"] = round(max(waits), 3)
        result["ok"] = max(waits) <= TARGET_S and result["a_pending_after"] > 0
    finally:
        await worker.close()
        await intake.close()
        pg.drop_database(args.pg_url, name)
    result["loadavg_after"] = loadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness", description=__doc__)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("DATAWORKFLOWS_BENCH_POSTGRES_URL") or DEFAULT_PG_URL,
        help="an admin URL of the PostgreSQL server (a scratch database is made beside it)",
    )
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--step-ms", type=int, default=50)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    plan = result.pop("claim_plan")
    print("claim plan (EXPLAIN ANALYZE, rolled back):")
    print("\n".join("  " + line for line in plan))
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
