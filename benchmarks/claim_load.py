"""The claim's cost on PostgreSQL, and what 1,000 workers would ask of the database.

``python -m benchmarks.claim_load [--pg-url URL] [--seconds S] [--workers 1000]``

Measured (a scratch database, dropped at the end), through the engine's own
:meth:`RunLedger.claim_many`:

* an *empty* claim (the queue has nothing claimable: the statement runs and rolls back)
  and a *hit* (one ``Pending`` run claimed and its ``RunStarted`` event written), each
  serially for ``--seconds``: wall milliseconds per claim, and the database server's CPU
  per claim (its backends' CPU time from ``/proc``, so on this machine only);
* empty claims from ``--clients`` concurrent connections: claims/s the server sustains.

Then the model: ``W`` idle workers each poll every ``poll_interval`` seconds and, on
PostgreSQL, every enqueue's ``NOTIFY`` wakes every idle worker, which then claims once. So
the offered claim rate is ``W / poll + enqueues/s x W_idle``; with the measured per-claim
server CPU that is the number of cores the claims alone occupy. Printed as a table for
1,000 workers at a few enqueue rates, beside the measured ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from benchmarks import pg

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _server_cpu(admin_url: str, database: str) -> float:
    """CPU seconds of every server backend connected to ``database`` (from /proc)."""
    with pg.connect(admin_url) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchall()
        ]
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


async def _serial(
    kernel: Any, admin_url: str, db: str, seconds: float, hit: bool
) -> dict[str, Any]:
    workflow = "claim-cost"
    count, wall = 0, 0.0
    cpu0 = _server_cpu(admin_url, db)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if hit:
            await kernel.service.execute(workflow, trigger={})
        t0 = time.perf_counter()
        claimed = await kernel.ledger.claim_many("bench", 1)
        wall += time.perf_counter() - t0
        assert len(claimed) == (1 if hit else 0)
        count += 1
    cpu = _server_cpu(admin_url, db) - cpu0
    return {
        "claims": count,
        "wall_ms_per_claim": round(1000 * wall / count, 3),
        # the enqueues of the hit case cost server CPU too: an upper bound there
        "server_cpu_ms_per_claim": round(1000 * cpu / count, 3),
    }


async def _concurrent(kernel: Any, clients: int, seconds: float) -> float:
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await kernel.ledger.claim_many("bench", 1)
            done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done / seconds


def model(
    per_claim_cpu_ms: float, workers: int, poll: float, rates: list[float]
) -> list[dict[str, Any]]:
    """Offered claims/s of ``workers`` idle workers and the server cores they occupy."""
    rows = []
    for rate in rates:
        offered = workers / poll + rate * workers
        rows.append(
            {
                "workers": workers,
                "enqueues_per_s": rate,
                "claims_per_s": round(offered),
                "server_cores": round(offered * per_claim_cpu_ms / 1000, 2),
            }
        )
    return rows


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    db = f"{pg.admin_database(args.pg_url)}_claims_{os.getpid()}"
    pg.create_database(args.pg_url, db)
    kernel = Kernel(
        Settings(
            database_url=pg.database_url(args.pg_url, db),
            auto_migrate=True,
            load_plugins="dataworkflows-echo",
        )
    )
    try:
        await kernel.start()
        await kernel.service.apply(
            {
                "id": "claim-cost",
                "displayName": "claim cost",
                "nodes": [{"id": "a", "actionType": "core.echo", "parameters": {"message": "x"}}],
            }
        )
        empty = await _serial(kernel, args.pg_url, db, args.seconds, hit=False)
        hit = await _serial(kernel, args.pg_url, db, args.seconds, hit=True)
        ceiling = {str(c): round(await _concurrent(kernel, c, args.seconds)) for c in args.clients}
    finally:
        await kernel.close()
        pg.drop_database(args.pg_url, db)
    per_claim = empty["server_cpu_ms_per_claim"]
    return {
        "empty_claim": empty,
        "hit_claim": hit,
        "empty_claims_per_s_by_clients": ceiling,
        "model": model(per_claim, args.workers, args.poll, [0, 1, 10, 100]),
        "load": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "DATAWORKFLOWS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=1.0, help="DATAWORKFLOWS_POLL_INTERVAL")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
