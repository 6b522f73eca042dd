"""``console_pages``: how long the web console's pages take on the server at 1 M runs
(PostgreSQL), and the plans of the runs list's queries (issue 18: < 200 ms per page).

    python3 -m uv run --all-packages python -m benchmarks.console_pages --runs 1000000

1. A scratch database next to ``--pg-url`` (``<db>_console_<pid>``) is migrated; 10
   workflows (two ``core.echo`` steps) are created through the kernel's service.
2. ``--runs`` runs are loaded server-side with ``generate_series`` (statuses 90 %
   Succeeded, 8 % Failed, 1.5 % Cancelled, 0.5 % Running; spread over 30 days; two
   attempt rows each; one dead letter per 1,000 runs), then ``VACUUM (ANALYZE)``.
3. The app (API + console, no worker) serves on 127.0.0.1; every page is requested
   ``--repeat`` times; a middleware times each request inside the server (handler and
   rendering). Reported per page: server p50/p95/max ms and the client's round trip p50.
4. ``EXPLAIN (ANALYZE, BUFFERS)`` of the runs list's SQL for each filter combination.

Every request goes to 127.0.0.1; the database is dropped at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from benchmarks import pg
from benchmarks.common import percentile, table

DEFAULT_PG = os.environ.get(
    "DATAWORKFLOWS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
WORKFLOWS = 10
BATCH = 100_000
TARGET_MS = 200.0

_LOAD = """
WITH ins AS (
  INSERT INTO workflow_executions (
    id, workflow_id, workflow_version, request_id, status, trigger, tenant_id,
    created_at, started_at, ended_at, error, fencing_token, recovery_count, cancel_requested)
  SELECT gen_random_uuid(),
         'console-' || lpad((g %% %(workflows)s)::text, 2, '0'),
         1, 'load-' || g,
         CASE WHEN g %% 1000 < 900 THEN 'Succeeded' WHEN g %% 1000 < 980 THEN 'Failed'
              WHEN g %% 1000 < 995 THEN 'Cancelled' ELSE 'Running' END,
         jsonb_build_object('i', g), 'default',
         %(base)s::timestamptz + g * %(step)s::interval,
         %(base)s::timestamptz + g * %(step)s::interval + interval '2 ms',
         CASE WHEN g %% 1000 < 995
              THEN %(base)s::timestamptz + g * %(step)s::interval + interval '9 ms' END,
         CASE WHEN g %% 1000 BETWEEN 900 AND 979
              THEN jsonb_build_object('code', 'boom', 'message', 'failed on purpose') END,
         1, 0, false
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
  RETURNING id, request_id, started_at, status, workflow_id, created_at
), acts AS (
  INSERT INTO action_executions (
    id, execution_id, node_id, action_type, attempt, status, parameters, outputs,
    started_at, ended_at)
  SELECT gen_random_uuid(), ins.id, n.node, 'core.echo', 1,
         CASE WHEN n.node = 'second' AND ins.status = 'Failed' THEN 'Failed' ELSE 'Succeeded' END,
         jsonb_build_object('message', ins.request_id),
         jsonb_build_object('echo', ins.request_id),
         ins.started_at + n.off, ins.started_at + n.off + interval '3 ms'
  FROM ins CROSS JOIN (VALUES ('first', interval '0 ms'), ('second', interval '4 ms'))
       AS n(node, off)
)
INSERT INTO dead_letters (id, execution_id, workflow_id, tenant_id, reason, details, created_at)
SELECT gen_random_uuid(), ins.id, ins.workflow_id, 'default', 'retries exhausted', '{}'::jsonb,
       ins.created_at
FROM ins WHERE ins.status = 'Failed' AND right(ins.request_id, 3) = '950'
"""


def _definition(i: int) -> dict[str, Any]:
    return {
        "id": f"console-{i:02d}",
        "displayName": f"Console benchmark {i}",
        "startNode": "first",
        "nodes": [
            {
                "id": "first",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.i }}"},
                "edges": [{"targetNode": "second"}],
            },
            {
                "id": "second",
                "actionType": "core.echo",
                "parameters": {"message": "{{ nodes.first.outputs.echo }}"},
            },
        ],
    }


def _load(url: str, runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.monotonic()
    with psycopg.connect(pg.plain_url(url), autocommit=True) as conn:
        base = conn.execute("SELECT now() - interval '30 days'").fetchone()[0]  # type: ignore[index]
        step = f"{max(1, 30 * 86_400_000 // max(runs, 1))} milliseconds"
        for lo in range(1, runs + 1, BATCH):
            hi = min(runs, lo + BATCH - 1)
            conn.execute(
                _LOAD,
                {"workflows": WORKFLOWS, "base": base, "step": step, "lo": lo, "hi": hi},
            )
            log(f"  loaded {hi:,} runs in {time.monotonic() - started:.0f} s")
        load_s = time.monotonic() - started
        for name in ("workflow_executions", "action_executions", "dead_letters"):
            conn.execute(f"VACUUM (ANALYZE) {name}")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return {"load_s": round(load_s, 1), "database_size": size.fetchone()[0]}  # type: ignore[index]


def _sample(url: str) -> dict[str, Any]:
    with psycopg.connect(pg.plain_url(url), autocommit=True) as conn:
        run = conn.execute(
            "SELECT id FROM workflow_executions WHERE status = 'Failed' "
            "ORDER BY created_at LIMIT 1 OFFSET 100"
        ).fetchone()
        middle = conn.execute(
            "SELECT min(created_at) + (max(created_at) - min(created_at)) / 2 "
            "FROM workflow_executions"
        ).fetchone()
    return {"run": str(run[0]) if run else None, "middle": middle[0] if middle else None}


#: the runs list's query per filter (what RunQueries.executions sends, LIMIT 51)
_LIST = (
    "SELECT id FROM workflow_executions WHERE tenant_id = 'default'{where} "
    "ORDER BY created_at DESC, id DESC LIMIT 51"
)


#: plan nodes above the access path
_WRAPPERS = ("Limit", "Sort", "Incremental Sort", "Gather Merge")


def _explain(url: str, middle: Any) -> list[list[Any]]:
    cases = {
        "no filter": "",
        "workflow": " AND workflow_id = 'console-03'",
        "status Failed": " AND status = 'Failed'",
        "workflow + Cancelled": " AND workflow_id = 'console-03' AND status = 'Cancelled'",
        "workflow + Pending (none)": " AND workflow_id = 'console-03' AND status = 'Pending'",
        "time range (1 day)": (
            f" AND created_at >= '{middle}'::timestamptz"
            f" AND created_at < '{middle}'::timestamptz + interval '1 day'"
        ),
        "keyset page mid-table": (
            f" AND created_at <= '{middle}'::timestamptz"
            f" AND (created_at < '{middle}'::timestamptz OR (created_at = '{middle}'::timestamptz"
            " AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff'))"
        ),
    }
    rows = []
    with psycopg.connect(pg.plain_url(url), autocommit=True) as conn:
        for name, where in cases.items():
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _LIST.format(where=where)
            ).fetchone()[0][0]  # type: ignore[index]
            top = plan["Plan"]
            node = top
            while node.get("Plans") and node["Node Type"] in _WRAPPERS:
                node = node["Plans"][0]
            access = f"{node['Node Type']} {node.get('Index Name', '')}".strip()
            rows.append([name, access, f"{plan['Execution Time']:.2f}"])
    return rows


async def _measure(url: str, sample: dict[str, Any], repeat: int) -> list[list[Any]]:
    from dataworkflows.api import create_app
    from dataworkflows.common.pagination import encode_cursor
    from dataworkflows.console import setup_console
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    kernel = Kernel(Settings(database_url=url, auto_migrate=False))
    app = create_app(kernel, run_worker=False, run_scheduler=False)
    setup_console(app)
    server_ms: dict[str, list[float]] = {}

    @web.middleware
    async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        server_ms.setdefault(request.path_qs, []).append((time.perf_counter() - started) * 1000)
        return response

    app.middlewares.insert(0, timed)
    middle = sample["middle"].isoformat(timespec="seconds").replace("+00:00", "")
    pages = {
        "/ (workflows + last run each)": "/",
        "/workflows/{id}": "/workflows/console-03",
        "/runs": "/runs",
        "/runs?workflowId": "/runs?workflowId=console-03",
        "/runs?status=Failed": "/runs?status=Failed",
        "/runs?workflowId&status=Cancelled": "/runs?workflowId=console-03&status=Cancelled",
        "/runs?from&to (to end of day)": f"/runs?from={middle}&to={middle[:11]}23:59:59",
        "/runs?cursor (page mid-table)": "/runs?cursor="
        + encode_cursor("executions", [sample["middle"], uuid.UUID(int=2**128 - 1)]),
        "/runs?workflowId&cursor (mid-table)": "/runs?workflowId=console-03&cursor="
        + encode_cursor("executions", [sample["middle"], uuid.UUID(int=2**128 - 1)]),
        "/runs/{id}": f"/runs/{sample['run']}",
        "/runs/{id}/live": f"/runs/{sample['run']}/live",
        "/dead-letters": "/dead-letters",
        "/plugins": "/plugins",
        "/credentials": "/credentials",
    }
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    rows = []
    try:
        for _ in range(2):  # warm up the pool, templates and caches
            for path in pages.values():
                await (await client.get(path)).read()
        server_ms.clear()
        for label, path in pages.items():
            trips = []
            for _ in range(repeat):
                started = time.perf_counter()
                resp = await client.get(path)
                await resp.read()
                trips.append((time.perf_counter() - started) * 1000)
                if resp.status != 200:
                    raise SystemExit(f"{path}: HTTP {resp.status}")
            rows.append(_row(label, server_ms.pop(path, []), trips))
    finally:
        await client.close()
    return rows


def _row(label: str, server: list[float], trips: list[float]) -> list[Any]:
    p95 = percentile(server, 95) or 0.0
    return [
        label,
        f"{percentile(server, 50) or 0:.1f}",
        f"{p95:.1f}",
        f"{max(server, default=0):.1f}",
        f"{percentile(trips, 50) or 0:.1f}",
        "yes" if p95 < TARGET_MS else "NO",
    ]


async def _create_workflows(url: str) -> None:
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    kernel = Kernel(Settings(database_url=url, auto_migrate=False))
    await kernel.start()
    try:
        for i in range(WORKFLOWS):
            await kernel.service.create_workflow(_definition(i), auto_activate=True)
    finally:
        await kernel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_pages")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 1:
        parser.error("--runs and --repeat must be at least 1")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    name = f"{pg.admin_database(args.pg_url)}_console_{os.getpid()}"
    pg.create_database(args.pg_url, name)
    url = pg.database_url(args.pg_url, name)
    try:
        from dataworkflows.db import migrate

        migrate.upgrade(url)
        asyncio.run(_create_workflows(url))
        loaded = _load(url, args.runs, log)
        sample = _sample(url)
        pages = asyncio.run(_measure(url, sample, args.repeat))
        plans = _explain(url, sample["middle"])
    finally:
        if not args.keep:
            pg.drop_database(args.pg_url, name)
    print(
        f"console pages at {args.runs:,} runs on PostgreSQL {pg.server_version(args.pg_url)} "
        f"(loaded in {loaded['load_s']} s, database {loaded['database_size']}, "
        f"load average {os.getloadavg()[0]:.1f}), {args.repeat} requests per page"
    )
    headers = ["page", "server p50 ms", "p95 ms", "max ms", "round trip p50 ms", "< 200 ms"]
    print(table(headers, pages))
    print()
    print(table(["runs list filter", "plan (access path)", "execution ms"], plans))
    return 0 if all(row[-1] == "yes" for row in pages) else 1


if __name__ == "__main__":
    raise SystemExit(main())
