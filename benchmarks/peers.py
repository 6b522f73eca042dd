"""Peer mode: W1 on DBOS Transact and on Procrastinate, measured exactly like ours.

Each peer runs as a process of its own (:mod:`benchmarks.peer_dbos`,
:mod:`benchmarks.peer_procrastinate`; protocol in :mod:`benchmarks.peer_process`) on a
scratch PostgreSQL database of its own on the same server. Lifecycle of one measurement:
a setup process (the peer creates its tables, ``warmup`` workflows), the settled commit
counter, a null process (launch and shut down, no workflow), the counter again, a WAL
mark, the measured process (its CPU and memory and the database's backends metered from
"go" to ``@@DONE``), a WAL mark once it has exited, the counter once more. Latencies and
runs/s come from the peer's own tables: ``dbos.workflow_status`` (``created_at`` →
``completed_at``) and ``procrastinate_events`` (``deferred`` → ``succeeded``). Durable
commits are commit records of write transactions on the peer's database between the two
WAL marks (:func:`benchmarks.pg.durable_commits`).

DBOS is measured twice in one invocation, through its synchronous API (threads) and its
asynchronous one (asyncio tasks); each result names the faster one (``dbos_fastest``),
the headline figure. A peer that is not installed or fails gives a result that says why;
the rest of the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from benchmarks import pg
from benchmarks.common import BenchmarkError, latency_summary, loadavg
from benchmarks.peer_harness import PeerProcess, peer_cycle
from benchmarks.procstats import PostgresMeter, ProcessMeter, per_run_ms
from benchmarks.workloads import BenchDB, Context, drop_database

INSTALL_HINT = (
    "install the benchmark extra: python3 -m uv run --all-packages --extra bench "
    "python -m benchmarks run ..."
)

#: (created s, started s or None, ended s) per run, steps recorded, the statuses seen
Timings = tuple[list[tuple[float, float | None, float]], int, str]


@dataclass
class PeerSpec:
    """How to run and read one peer."""

    label: str
    package: str
    module: str
    workload: str
    db_suffix: str
    ok_status: str
    timings: Callable[[str, str], Timings]
    extra_args: list[str] = field(default_factory=list)
    setup_args: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _dbos_timings(url: str, tag: str) -> Timings:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT created_at, started_at_epoch_ms, coalesce(completed_at, updated_at), status"
            " FROM dbos.workflow_status WHERE workflow_uuid LIKE %s",
            (f"{tag}-%",),
        ).fetchall()
        steps = conn.execute(
            "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid LIKE %s",
            (f"{tag}-%",),
        ).fetchone()
    statuses = ",".join(sorted({str(r[3]) for r in rows}))
    timings = [
        (r[0] / 1000.0, None if r[1] is None else r[1] / 1000.0, r[2] / 1000.0) for r in rows
    ]
    return timings, int(steps[0]) if steps else 0, statuses


_PROCRASTINATE_TIMES = """
SELECT
    extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred')),
    extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started')),
    extract(epoch FROM max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed', 'aborted'))),
    j.status
FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
WHERE j.args ->> 'tag' = %s
GROUP BY j.id, j.status
"""


def _procrastinate_timings(url: str, tag: str) -> Timings:
    """Per job: ``deferred`` → ``started`` → final event; a job does both steps (2 each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_PROCRASTINATE_TIMES, (tag,)).fetchall()
    statuses = ",".join(sorted({str(r[3]) for r in rows}))
    timings = [
        (float(r[0]), None if r[1] is None else float(r[1]), float(r[2]))
        for r in rows
        if r[0] is not None and r[2] is not None
    ]
    return timings, 2 * len(timings), statuses


def _workload(base: str, io_url: str | None) -> str:
    return f"{base}-io" if io_url else base


def dbos_spec(api: str, io_url: str | None = None) -> PeerSpec:
    """DBOS through its ``sync`` (threads) or ``async`` (asyncio) API."""
    path = {
        "sync": "DBOS.start_workflow + handle.get_result() in threads",
        "async": "await DBOS.start_workflow_async + await handle.get_result() in tasks",
    }[api]
    return PeerSpec(
        label="DBOS",
        package="dbos",
        module="benchmarks.peer_dbos",
        workload=_workload("W1-DBOS" if api == "sync" else "W1-DBOS-async", io_url),
        db_suffix=f"dbos_{api}",
        ok_status="SUCCESS",
        timings=_dbos_timings,
        extra_args=["--api", api],
        config={"api": api, "path": path},
    )


def procrastinate_spec(io_url: str | None = None) -> PeerSpec:
    """Procrastinate: one async job per workflow, worker in the same process."""
    return PeerSpec(
        label="Procrastinate",
        package="procrastinate",
        module="benchmarks.peer_procrastinate",
        workload=_workload("W1-Procrastinate", io_url),
        db_suffix="procrastinate",
        ok_status="succeeded",
        timings=_procrastinate_timings,
        setup_args=["--apply-schema"],
        config={
            "path": "await task.defer_async(...); app.run_worker_async(concurrency=inflight)",
            "workflow": "one job doing both steps (steps not durable)",
        },
    )


async def run_dbos_peer(ctx: Context, n: int, io_url: str | None = None) -> list[dict[str, Any]]:
    """W1 on DBOS through its sync API, then its async API: two results, each naming the
    faster one (``dbos_fastest``, the headline figure)."""
    results = [
        await measure_peer(ctx, n, dbos_spec(api, io_url), io_url) for api in ("sync", "async")
    ]
    speeds = {r["config"]["api"]: r.get("runs_per_s") for r in results if r.get("ok")}
    fastest = max(speeds, key=lambda api: speeds[api] or 0.0) if speeds else None
    for r in results:
        r["dbos_runs_per_s_by_api"] = speeds
        r["dbos_fastest_api"] = fastest
        r["dbos_fastest"] = fastest is not None and r["config"]["api"] == fastest
    return results


async def run_procrastinate_peer(ctx: Context, n: int, io_url: str | None = None) -> dict[str, Any]:
    """W1 on Procrastinate (one job per workflow)."""
    return await measure_peer(ctx, n, procrastinate_spec(io_url), io_url)


async def measure_peer(
    ctx: Context, n: int, spec: PeerSpec, io_url: str | None = None
) -> dict[str, Any]:
    """One full measurement of a peer (see the module docstring)."""
    result: dict[str, Any] = {
        "workload": spec.workload,
        "backend": "postgresql",
        "ok": False,
        "n": n,
        "config": {"inflight": ctx.inflight, "warmup": ctx.warmup, "io_url": io_url} | spec.config,
    }
    started = time.monotonic()
    if importlib.util.find_spec(spec.package) is None:
        result["skipped"] = True
        result["error"] = f"{spec.package} is not installed in this environment; {INSTALL_HINT}"
        return result
    result["peer_version"] = importlib.metadata.version(spec.package)
    result[f"{spec.package}_version"] = result["peer_version"]
    if ctx.pg_admin_url is None:
        result["error"] = "no PostgreSQL URL given (--pg-url)"
        return result
    name = f"{ctx.db_prefix}_{spec.db_suffix}"[:63]
    db = BenchDB("postgresql", pg.database_url(ctx.pg_admin_url, name), name=name)
    try:
        await _measure(ctx, n, spec, io_url, name, result)
    except BenchmarkError as exc:
        result["error"] = str(exc)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await drop_database(ctx, db)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


async def _measure(
    ctx: Context, n: int, spec: PeerSpec, io_url: str | None, name: str, result: dict[str, Any]
) -> None:
    admin = ctx.pg_admin_url
    assert admin is not None
    plain = pg.database_url(admin, name, driver=False)
    args = [*spec.extra_args, *(["--io-url", io_url] if io_url else [])]
    slug = spec.db_suffix.replace("_", "-")

    def process(count: int, tag: str, what: str, extra: Sequence[str] = ()) -> PeerProcess:
        return PeerProcess(
            ctx, spec.module, plain, count, tag, f"{slug}-{what}", [*args, *extra], spec.label
        )

    await asyncio.to_thread(pg.create_database, admin, name)
    await peer_cycle(process(ctx.warmup, "warmup", "setup", spec.setup_args))
    c0 = await asyncio.to_thread(pg.settled_counters, admin, name)
    await peer_cycle(process(0, "null", "null"))
    c0b = await asyncio.to_thread(pg.settled_counters, admin, name)

    peer = process(n, "run", "measured")
    # the WAL kept until it is read (a busy server recycled a window's segments first)
    hold = await asyncio.to_thread(pg.hold_wal, admin)
    try:
        done, wal0, wal1 = await _measured_process(peer, name, result)
        durable = await asyncio.to_thread(pg.durable_commits, admin, name, wal0, wal1)
    finally:
        if hold is not None:
            hold.close()
    durable["wal_held"] = hold is not None
    if getattr(hold, "overflowed", False):
        durable["wal_hold_let_go"] = True
    c1 = await asyncio.to_thread(pg.settled_counters, admin, name)

    rows, steps, statuses = await asyncio.to_thread(spec.timings, plain, "run")
    if not rows:
        raise BenchmarkError(f"{spec.label} recorded no workflow")
    first = min(r[0] for r in rows)
    last = max(r[2] for r in rows)
    span = max(last - first, 1e-9)
    runs = len(rows)
    total = c1["commits"] - c0b["commits"]
    null_cost = c0b["commits"] - c0["commits"]
    if durable.get("commits") is not None:
        durable["per_workflow"] = round(durable["commits"] / runs, 3)
    result.update(
        {
            "runs": runs,
            "statuses": statuses,
            "ledger_span_s": round(span, 3),
            "runs_per_s": round(runs / span, 1),
            "steps": steps,
            "steps_per_run": round(steps / runs, 2),
            "steps_per_s": round(steps / span, 1),
            "latency": latency_summary([r[2] - r[0] for r in rows]),
            "service_latency": latency_summary([r[2] - r[1] for r in rows if r[1] is not None]),
            "client_wall_s": round(done.get("wall_s", 0.0), 3),
            "enqueue_errors": done.get("errors", 0),
            "engine": result["engine"] | {"cpu_ms_per_run": per_run_ms(result["engine"], runs)},
            "database": result["database"]
            | {"cpu_ms_per_run": per_run_ms(result["database"], runs)},
            "commits": {
                "total": total,
                "engine_start_stop": null_cost,
                "harness": 0,
                "net": total - null_cost,
                "per_workflow": round((total - null_cost) / runs, 3),
                "per_workflow_raw": round(total / runs, 3),
                "per_step": round((total - null_cost) / max(1, steps), 3),
                "rollbacks": c1["rollbacks"] - c0b["rollbacks"],
                "settled": bool(c0["stable"] and c0b["stable"] and c1["stable"]),
                "rows_by_table": pg.table_deltas(c0b["tables"], c1["tables"], runs),
            },
            "durable_commits": durable,
        }
    )
    result["ok"] = runs == n and statuses == spec.ok_status and not done.get("errors")
    if not result["ok"]:
        result["error"] = (
            f"{runs} of {n} {spec.label} workflows recorded (statuses {statuses}); "
            f"first error: {done.get('first_error')}"
        )


async def _measured_process(
    peer: PeerProcess, name: str, result: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Run the measured process: ``@@DONE``'s payload and the WAL marks taken right before
    the drive and right after the process exited; its CPU/memory and the database's go
    to ``result["engine"]``/``result["database"]``."""
    admin = peer.ctx.pg_admin_url
    assert admin is not None
    await peer.start()
    try:
        await peer.expect("LAUNCHED", 120)
        assert peer.proc is not None
        meter = ProcessMeter([peer.proc.pid])
        db_meter = PostgresMeter(name, admin)
        result["loadavg_before"] = loadavg()
        wal0 = await asyncio.to_thread(pg.wal_mark, admin)
        meter.start()
        db_meter.start()
        try:
            await peer.say()
            done = await peer.expect("DONE", peer.ctx.timeout + 60)
        finally:
            result["engine"] = meter.stop()
            result["database"] = db_meter.stop()
        result["loadavg_after"] = loadavg()
    finally:
        await peer.finish()
    wal1 = await asyncio.to_thread(pg.wal_mark, admin)
    return done, wal0, wal1
