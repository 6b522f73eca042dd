"""The workloads W1-W4 against real engine processes, plus the measuring lifecycle.

Every engine workload (W1, W2, W3) goes through :func:`run_engine_workload`:

1. a fresh database (SQLite file, or a scratch PostgreSQL database), migrated;
2. a *setup* engine: create and publish the workflow over HTTP (and the webhook trigger
   for W3), run ``warmup`` runs, stop it;
3. PostgreSQL: read the database's settled commit counter (C0), then a *null* engine
   lifecycle (start, ``/health``, one idle second, stop) and read it again (C0'): the
   fixed cost of starting and stopping an engine, subtracted below;
4. the *measured* engine: start, take the CPU baseline of the engine processes and of the
   database's backends, drive the workload over HTTP, read the CPU and peak RSS, stop it,
   read the settled counter (C1);
5. read every run's ledger timestamps and attempt rows.

``commits per workflow = (C1 - C0' - (C0' - C0) - harness commits) / runs``; the raw
``(C1 - C0') / runs`` is reported too. The harness's ledger reads end with ROLLBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from benchmarks import pg
from benchmarks.common import BenchmarkError, latency_summary, loadavg
from benchmarks.engine import EngineProcesses
from benchmarks.latency_server import LatencyServer
from benchmarks.probe import LedgerProbe, RunTiming
from benchmarks.procstats import PostgresMeter, ProcessMeter, per_run_ms
from benchmarks.statements import StatementLog

# -- definitions ------------------------------------------------------------------------


def w1_definition(workflow_id: str = "bench-w1", source: str = "trigger.i") -> dict[str, Any]:
    """Two ``core.echo`` steps; the second renders the first's output (templates on).

    ``source`` is where the first step reads its message: ``trigger.i`` for runs started
    with ``POST .../execute``, ``trigger.body.i`` for webhook deliveries."""
    return {
        "id": workflow_id,
        "displayName": "Benchmark W1: two echo steps",
        "nodes": [
            {
                "id": "first",
                "actionType": "core.echo",
                "parameters": {"message": "{{ " + source + " }}"},
            },
            {
                "id": "second",
                "actionType": "core.echo",
                "parameters": {"message": "{{ nodes.first.outputs.echo }}"},
            },
        ],
    }


def w2_definition(fanout: int = 50, workflow_id: str = "bench-w2") -> dict[str, Any]:
    """``start`` → ``fanout`` echo nodes (success edges) → ``join`` (waits for all)."""
    branches = [f"b{k:02d}" for k in range(fanout)]
    return {
        "id": workflow_id,
        "displayName": f"Benchmark W2: fan-out 1 -> {fanout} -> join",
        "startNode": "start",
        "maxParallelActions": fanout,
        "nodes": [
            {
                "id": "start",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.i }}"},
                "edges": [{"targetNode": b, "when": "success"} for b in branches],
            },
            *[
                {
                    "id": b,
                    "actionType": "core.echo",
                    "parameters": {"message": "{{ nodes.start.outputs.echo }}"},
                    "edges": [{"targetNode": "join", "when": "success"}],
                }
                for b in branches
            ],
            {
                "id": "join",
                "actionType": "core.echo",
                "parameters": {"message": "joined {{ nodes.start.outputs.echo }}"},
            },
        ],
    }


# -- context and databases --------------------------------------------------------------


@dataclass
class Context:
    """Options shared by every workload of one invocation."""

    run_id: str
    work_dir: Path
    pg_admin_url: str | None
    db_prefix: str
    keep_databases: bool = False
    concurrency: int | None = None
    event_loop: str | None = None
    #: the engine's DATAWORKFLOWS_SQLITE_SYNCHRONOUS (None: the engine default, FULL)
    sqlite_synchronous: str | None = None
    processes: int = 1
    inflight: int = 16
    poll: float = 0.01
    warmup: int = 20
    timeout: float = 900.0
    engine_log_level: str = "WARNING"
    #: W4 and prune on a time-partitioned ledger (``dataworkflows ledger partition``)
    partitioned: bool = False
    #: W4 on this already loaded database (``--w4-database``): no load, never dropped
    w4_database: str | None = None
    #: more DATAWORKFLOWS_<NAME> settings of the engine (``--engine-setting``)
    extra_settings: dict[str, str] = field(default_factory=dict)
    #: W1io: the local latency server's delay, and the server if the invocation runs one
    #: (shared by every W1io workload, and by peers that want the same I/O)
    io_latency_ms: float = 5.0
    latency_server: LatencyServer | None = None
    #: W1solo's client: "stream" (the run's event stream) or "ledger" (polls the ledger)
    solo_client: str = "stream"
    log: Callable[[str], None] = print
    #: migrated once per invocation, copied for each workload (backend -> db name / path)
    templates: dict[str, str] = field(default_factory=dict)

    def engine_settings(self) -> dict[str, str]:
        settings = {"log_level": self.engine_log_level}
        if self.concurrency is not None:
            settings["worker_concurrency"] = str(self.concurrency)
        if self.event_loop is not None:
            settings["event_loop"] = self.event_loop
        if self.sqlite_synchronous is not None:
            settings["sqlite_synchronous"] = self.sqlite_synchronous
        settings.update(self.extra_settings)
        return settings


@dataclass
class BenchDB:
    backend: str
    url: str
    name: str | None = None
    path: Path | None = None


async def prepare_database(ctx: Context, backend: str, suffix: str) -> BenchDB:
    """A fresh, migrated database for one workload (a copy of one migrated per run)."""
    from dataworkflows.db import migrate

    if backend == "sqlite":
        template = ctx.templates.get("sqlite")
        if template is None:
            template = str(ctx.work_dir / "template.db")
            await asyncio.to_thread(migrate.upgrade, f"sqlite:///{template}")
            ctx.templates["sqlite"] = template
        path = ctx.work_dir / f"{suffix}.db"
        _remove_sqlite(path)
        await asyncio.to_thread(shutil.copyfile, template, path)
        url = f"sqlite+aiosqlite:///{path}"
        # a no-op unless a migration landed since the template was made (shared trees)
        await asyncio.to_thread(migrate.upgrade, url)
        return BenchDB(backend, url, path=path)
    if ctx.pg_admin_url is None:
        raise BenchmarkError("no PostgreSQL URL given (--pg-url)")
    admin = ctx.pg_admin_url
    template = ctx.templates.get("postgresql")
    if template is None:
        template = f"{ctx.db_prefix}_template"[:63]
        await asyncio.to_thread(pg.create_database, admin, template)
        await asyncio.to_thread(migrate.upgrade, pg.database_url(admin, template))
        ctx.templates["postgresql"] = template
    name = f"{ctx.db_prefix}_{suffix}"[:63]
    await asyncio.to_thread(pg.create_database, admin, name, template)
    url = pg.database_url(admin, name)
    await asyncio.to_thread(migrate.upgrade, url)
    return BenchDB(backend, url, name=name)


async def drop_templates(ctx: Context) -> None:
    """Remove the per-invocation template databases."""
    template = ctx.templates.pop("postgresql", None)
    if template is not None and ctx.pg_admin_url is not None:
        await asyncio.to_thread(pg.drop_database, ctx.pg_admin_url, template)
    template = ctx.templates.pop("sqlite", None)
    if template is not None:
        _remove_sqlite(Path(template))


async def setup_workflow(
    db: BenchDB,
    definition: dict[str, Any],
    *,
    webhook: bool,
    triggers: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Create and publish the workflow (and a webhook trigger, and ``triggers``) through
    the kernel's service layer, in this process: not part of any measurement, and no extra
    engine start-up. Returns ``trigger_id`` (None if webhook triggers are unavailable) and
    a note."""
    from dataworkflows.common.errors import ApiError
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    kernel = Kernel(Settings(database_url=db.url, auto_migrate=False))
    await kernel.start()
    setup: dict[str, Any] = {}
    try:
        await kernel.service.create_workflow(definition, auto_activate=True)
        for trigger in triggers:
            await kernel.triggers.create(definition["id"], trigger)
        if webhook:
            try:
                view = await kernel.triggers.create(
                    definition["id"], {"type": "webhook", "config": {}, "name": "benchmark"}
                )
                setup["trigger_id"] = str(view["id"])
                setup["path_note"] = "webhook trigger POST /hooks/{triggerId}"
            except ApiError as exc:
                setup["trigger_id"] = None
                setup["path_note"] = f"creating a webhook trigger failed: {exc.code}: {exc}"
    except ApiError as exc:
        raise BenchmarkError(
            f"creating workflow {definition['id']!r} failed: {exc.code}: {exc} {exc.details}"
        ) from None
    finally:
        await kernel.close()
    return setup


async def drop_database(ctx: Context, db: BenchDB) -> None:
    if ctx.keep_databases:
        return
    if db.name is not None and ctx.pg_admin_url is not None:
        await asyncio.to_thread(pg.drop_database, ctx.pg_admin_url, db.name)
    if db.path is not None:
        _remove_sqlite(db.path)


def _remove_sqlite(path: Path) -> None:
    for extra in ("", "-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)


# -- HTTP helpers -----------------------------------------------------------------------


def http_session(limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def create_workflow(http: aiohttp.ClientSession, base: str, definition: Any) -> None:
    async with http.post(
        f"{base}/api/v1/workflows", params={"autoActivate": "true"}, json=definition
    ) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise BenchmarkError(
                f"creating workflow {definition['id']!r} failed: {resp.status} {body[:2000]}"
            )


# -- drivers ----------------------------------------------------------------------------


@dataclass
class DriveResult:
    ids: list[uuid.UUID]
    errors: list[str]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


Driver = Callable[[aiohttp.ClientSession, str, dict[str, Any], LedgerProbe], Awaitable[DriveResult]]


async def closed_loop(
    http: aiohttp.ClientSession,
    base: str,
    workflow_id: str,
    n: int,
    probe: LedgerProbe,
    *,
    inflight: int,
    poll: float,
    tag: str,
    timeout: float,
    trigger_for: Callable[[int], dict[str, Any]] | None = None,
) -> DriveResult:
    """Keep ``inflight`` runs unfinished at a time: enqueue over HTTP
    (``POST /api/v1/workflows/{id}/execute``), notice final runs in the ledger, refill."""
    slots = asyncio.Semaphore(inflight)
    waiting: set[uuid.UUID] = set()
    ids: list[uuid.UUID] = []
    errors: list[str] = []
    producing_done = asyncio.Event()
    url = f"{base}/api/v1/workflows/{workflow_id}/execute"

    async def enqueue(i: int) -> None:
        try:
            trigger = trigger_for(i) if trigger_for is not None else {"i": i}
            async with http.post(url, json={"trigger": trigger, "requestId": f"{tag}-{i}"}) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 202:
                    raise BenchmarkError(f"execute answered {resp.status}: {body}")
                execution_id = uuid.UUID(body["executionId"])
        except (aiohttp.ClientError, ValueError, KeyError, BenchmarkError) as exc:
            errors.append(str(exc))
            slots.release()
            if len(errors) > max(10, n // 10):
                raise BenchmarkError(f"too many failed enqueues; first: {errors[0]}") from None
            return
        ids.append(execution_id)
        waiting.add(execution_id)

    async def produce() -> None:
        async with asyncio.TaskGroup() as group:
            for i in range(n):
                await slots.acquire()
                group.create_task(enqueue(i))
        producing_done.set()

    async def watch() -> None:
        while True:
            if waiting:
                for execution_id in await probe.finished(list(waiting)):
                    waiting.discard(execution_id)
                    slots.release()
            if producing_done.is_set() and not waiting:
                return
            await asyncio.sleep(poll)

    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            group.create_task(produce())
            group.create_task(watch())
    except TimeoutError:
        raise BenchmarkError(
            f"timed out after {timeout:.0f} s: {len(ids) - len(waiting)} of {n} runs final"
        ) from None
    except BaseExceptionGroup as group_error:
        first = _first_leaf(group_error)
        if isinstance(first, BenchmarkError):
            raise first from None
        raise
    return DriveResult(ids, errors, time.perf_counter() - started)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def fixed_rate(
    http: aiohttp.ClientSession,
    url: str,
    *,
    rate: float,
    duration: float,
    tag: str,
    max_outstanding: int,
    timeout: float,
    headers_for: Callable[[int], dict[str, str]],
    body_for: Callable[[int], dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Open loop: request ``i`` leaves at ``start + i / rate`` whatever the answers do.

    Returns one record per request (wall-clock send time, seconds to the answer, status,
    execution id) and counters. A request that would exceed ``max_outstanding`` is not
    sent and counted as dropped (the engine is not keeping up).
    """
    total = max(1, round(rate * duration))
    records: list[dict[str, Any]] = []
    outstanding = 0
    dropped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def send(i: int) -> None:
        nonlocal outstanding
        record: dict[str, Any] = {"i": i, "sent_wall": time.time()}
        started = time.perf_counter()
        try:
            async with http.post(url, json=body_for(i), headers=headers_for(i)) as resp:
                body = await resp.json(content_type=None)
                record["ack_s"] = time.perf_counter() - started
                record["status"] = resp.status
                if resp.status == 202 and isinstance(body, dict) and "executionId" in body:
                    record["execution_id"] = uuid.UUID(body["executionId"])
                else:
                    record["error"] = f"{resp.status}: {str(body)[:300]}"
        except (aiohttp.ClientError, ValueError, TimeoutError) as exc:
            record["error"] = repr(exc)
        finally:
            outstanding -= 1
            records.append(record)

    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + duration + timeout
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() > deadline:
            break
        if outstanding >= max_outstanding:
            dropped += 1
            continue
        outstanding += 1
        task = asyncio.create_task(send(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    send_span = loop.time() - start
    if tasks:
        await asyncio.wait(list(tasks), timeout=max(1.0, deadline - loop.time()))
    for task in list(tasks):
        task.cancel()
    sent = total - dropped
    return records, {
        "requests_planned": total,
        "requests_sent": sent,
        "dropped": dropped,
        "send_span_s": round(send_span, 3),
        "achieved_rate": round(sent / send_span, 1) if send_span > 0 else None,
    }


async def wait_final(
    probe: LedgerProbe, ids: list[uuid.UUID], *, poll: float, timeout: float
) -> None:
    """Wait (bounded) until every run in ``ids`` is final."""
    waiting = set(ids)
    try:
        async with asyncio.timeout(timeout):
            while waiting:
                waiting -= await probe.finished(list(waiting))
                if waiting:
                    await asyncio.sleep(poll)
    except TimeoutError:
        raise BenchmarkError(
            f"timed out after {timeout:.0f} s: {len(ids) - len(waiting)} of {len(ids)} runs final"
        ) from None


# -- the measuring lifecycle --------------------------------------------------------------


def summarize_runs(
    timings: list[RunTiming], steps: dict[str, int], expected: int
) -> dict[str, Any]:
    final = [t for t in timings if t.ended_at is not None]
    if not final:
        raise BenchmarkError("no run reached a final state")
    first = min(t.created_at for t in final)
    last = max(t.ended_at for t in final if t.ended_at is not None)
    span = max((last - first).total_seconds(), 1e-9)
    step_rows = sum(steps.values())
    latency = [(t.ended_at - t.created_at).total_seconds() for t in final if t.ended_at]
    service = [
        (t.ended_at - t.started_at).total_seconds() for t in final if t.ended_at and t.started_at
    ]
    queued = [(t.started_at - t.created_at).total_seconds() for t in final if t.started_at]
    return {
        "runs": len(final),
        "runs_expected": expected,
        "succeeded": sum(1 for t in final if t.status == "Succeeded"),
        "failed": sum(1 for t in final if t.status != "Succeeded"),
        "ledger_span_s": round(span, 3),
        "runs_per_s": round(len(final) / span, 1),
        "steps": step_rows,
        "steps_by_status": steps,
        "steps_per_run": round(step_rows / len(final), 2),
        "steps_per_s": round(step_rows / span, 1),
        "latency": latency_summary(latency),
        "service_latency": latency_summary(service),
        "queue_wait": latency_summary(queued),
    }


async def _engine(
    ctx: Context,
    db: BenchDB,
    name: str,
    *,
    processes: int,
    profile_to: Path | None = None,
    trace_commits_to: Path | None = None,
    settings: dict[str, str] | None = None,
) -> EngineProcesses:
    engine = EngineProcesses(
        db.url,
        log_dir=ctx.work_dir / "logs",
        name=name,
        processes=processes,
        settings=ctx.engine_settings() | (settings or {}),
        profile_to=profile_to,
        trace_commits_to=trace_commits_to,
    )
    try:
        await engine.start()
    except BaseException:
        await asyncio.to_thread(engine.stop)
        raise
    return engine


async def _settled(ctx: Context, db: BenchDB) -> dict[str, Any] | None:
    if db.name is None or ctx.pg_admin_url is None:
        return None
    return await asyncio.to_thread(pg.settled_counters, ctx.pg_admin_url, db.name)


def sqlite_mode(ctx: Context) -> str:
    """The SQLite ``synchronous`` setting the engines of ``ctx`` run with."""
    return (ctx.sqlite_synchronous or "FULL").upper()


async def _wal_mark(
    ctx: Context, db: BenchDB, *, quiet: bool = False, holds: list[Any] | None = None
) -> dict[str, Any] | None:
    """A :func:`pg.wal_mark` (PostgreSQL only); ``quiet``: once no backend of ``db`` is
    left (nothing of an engine just stopped is still committing); ``holds``: first keep
    the WAL from here on (:func:`pg.hold_wal`; the connection is appended, to close)."""
    if db.name is None or ctx.pg_admin_url is None:
        return None
    if quiet:
        await asyncio.to_thread(pg.wait_no_backends, ctx.pg_admin_url, db.name, 30.0)
    if holds is not None:
        hold = await asyncio.to_thread(pg.hold_wal, ctx.pg_admin_url)
        if hold is not None:
            holds.append(hold)
    return await asyncio.to_thread(pg.wal_mark, ctx.pg_admin_url)


async def _durable(
    ctx: Context, db: BenchDB, start: dict[str, Any] | None, holds: list[Any]
) -> dict[str, Any] | None:
    """Durable commits of ``db`` from ``start`` to now (after its engine stopped); then
    the WAL is no longer held."""
    if start is None or db.name is None or ctx.pg_admin_url is None:
        return None
    try:
        end = await _wal_mark(ctx, db, quiet=True)
        assert end is not None
        return await asyncio.to_thread(pg.durable_commits, ctx.pg_admin_url, db.name, start, end)
    finally:
        _release(holds)


def _release(holds: list[Any]) -> None:
    while holds:
        with contextlib.suppress(Exception):
            holds.pop().close()


def durable_block(
    measured: dict[str, Any], stop_cost: dict[str, Any] | None, runs: int
) -> dict[str, Any]:
    """The ``durable`` figures of a result: commit records in the WAL of transactions that
    wrote the workload's database, from just before the drive until the measured engine
    stopped (its start-up outside the window, its shutdown inside), per run; raw, and
    less the shutdown of a null engine (started, idle 1 s, then the same window around
    its stop) where that was measured."""
    runs = max(1, runs)

    def per_run(value: int | None, digits: int = 3) -> float | None:
        return None if value is None else round(value / runs, digits)

    commits = measured.get("commits")
    block: dict[str, Any] = {
        "commits": commits,
        "per_run": per_run(commits),
        "server_commits": measured.get("server_commits"),
        "server_commits_per_run": per_run(measured.get("server_commits")),
        "database_wal_bytes_per_run": per_run(measured.get("database_wal_bytes"), 1),
        "wal_bytes": measured["wal_bytes"],
        "wal_bytes_per_run": per_run(measured["wal_bytes"], 1),
        "wal_records": measured["wal_records"],
        "wal_syncs": measured["wal_syncs"],
        "wal_syncs_per_run": per_run(measured["wal_syncs"]),
        "window": "drive start -> measured engine stopped (shutdown included)",
    }
    if measured.get("by_tables") is not None:
        # what the durable commits wrote: per run, by the set of tables each changed
        block["per_run_by_tables"] = {
            tables: round(count / runs, 3) for tables, count in measured["by_tables"].items()
        }
    if measured.get("by_tables_error"):
        block["by_tables_error"] = measured["by_tables_error"]
    if stop_cost is not None:
        block["engine_stop_commits"] = stop_cost.get("commits")
        if commits is not None and stop_cost.get("commits") is not None:
            block["per_run_net"] = per_run(commits - stop_cost["commits"])
    error = measured.get("error") or (stop_cost or {}).get("error")
    if error:
        block["error"] = error
    return block


async def run_engine_workload(
    ctx: Context,
    backend: str,
    *,
    name: str,
    definition: dict[str, Any],
    n: int,
    drive: Driver,
    webhook: bool = False,
    processes: int | None = None,
    profile_to: Path | None = None,
    trace_commits_to: Path | None = None,
    log_statements: bool = False,
    measure_commits: bool = True,
    warm_trigger: Callable[[int], dict[str, Any]] | None = None,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one engine workload through the full measuring lifecycle (module docstring).

    ``settings``: more DATAWORKFLOWS_<NAME> settings of this workload's engines only."""
    processes = processes or ctx.processes
    result: dict[str, Any] = {
        "workload": name,
        "backend": backend,
        "ok": False,
        "n": n,
        "config": {
            "engine_processes": processes,
            "worker_concurrency": ctx.concurrency or "engine default",
            "event_loop": ctx.event_loop or "engine default",
            "sqlite_synchronous": ctx.sqlite_synchronous or "engine default (FULL)",
            "inflight": ctx.inflight,
            "warmup": ctx.warmup,
            "engine_log_level": ctx.engine_log_level,
            "profiled": profile_to is not None,
            "commit_trace": trace_commits_to is not None,
            "engine_settings": settings or {},
        },
    }
    if backend == "sqlite":
        result["synchronous"] = sqlite_mode(ctx)
    started = time.monotonic()
    db: BenchDB | None = None
    holds: list[Any] = []  # connections keeping the WAL of a durable-commit window
    try:
        db = await prepare_database(ctx, backend, f"{name.lower()}_{backend[:2]}")
        setup = await setup_workflow(db, definition, webhook=webhook)
        if ctx.partitioned and backend == "postgresql":
            await asyncio.to_thread(pg.partition_ledger, db.url)
            result["partitioned"] = True
        if ctx.warmup:
            engine = await _engine(
                ctx, db, f"{name}-{backend}-warmup", processes=processes, settings=settings
            )
            try:
                async with http_session() as http:
                    probe = await LedgerProbe(db.url).open()
                    try:
                        warm = await closed_loop(
                            http,
                            engine.base_url,
                            definition["id"],
                            ctx.warmup,
                            probe,
                            inflight=ctx.inflight,
                            poll=ctx.poll,
                            tag="warmup",
                            timeout=ctx.timeout,
                            trigger_for=warm_trigger,
                        )
                    finally:
                        await probe.close()
                    if warm.errors:
                        raise BenchmarkError(f"warm-up enqueue failed: {warm.errors[0]}")
            finally:
                await asyncio.to_thread(engine.stop)

        c0 = c0b = None
        null_durable = None
        if measure_commits:
            c0 = await _settled(ctx, db)
            if c0 is not None:
                null = await _engine(
                    ctx, db, f"{name}-{backend}-null", processes=processes, settings=settings
                )
                await asyncio.sleep(1.0)  # the idle second is part of what is measured
                stop_mark = await _wal_mark(ctx, db, holds=holds)
                await asyncio.to_thread(null.stop)
                c0b = await _settled(ctx, db)
                null_durable = await _durable(ctx, db, stop_mark, holds)

        statement_log = None
        if log_statements and db.name is not None and ctx.pg_admin_url is not None:
            statement_log = StatementLog(ctx.pg_admin_url, db.name)
            await asyncio.to_thread(statement_log.start)
        engine = await _engine(
            ctx,
            db,
            f"{name}-{backend}-measured",
            processes=processes,
            profile_to=profile_to,
            trace_commits_to=trace_commits_to,
            settings=settings,
        )
        probe = await LedgerProbe(db.url).open()
        probe_pid = probe._pg.info.backend_pid if probe._pg is not None else None
        meter = ProcessMeter(engine.pids)
        db_meter = (
            PostgresMeter(db.name, ctx.pg_admin_url, exclude={probe_pid})
            if db.name and ctx.pg_admin_url
            else None
        )
        result["loadavg_before"] = loadavg()
        wal_start = await _wal_mark(ctx, db, holds=holds)
        meter.start()
        if db_meter is not None:
            db_meter.start()
        try:
            engine.start_profiler()
            async with http_session(limit=max(100, ctx.inflight * 2)) as http:
                driven = await drive(http, engine.base_url, setup, probe)
        finally:
            await asyncio.to_thread(engine.stop_profiler)
            engine_figures = meter.stop()
            db_figures = db_meter.stop() if db_meter is not None else None
            await probe.close()
            await asyncio.to_thread(engine.stop)
        result["loadavg_after"] = loadavg()
        durable = await _durable(ctx, db, wal_start, holds)
        c1 = await _settled(ctx, db) if measure_commits else None

        probe = await LedgerProbe(db.url).open()
        try:
            timings = await probe.timings(driven.ids)
            steps = await probe.step_rows(driven.ids)
            summary = summarize_runs(timings, steps, n)
            if summary["failed"]:
                summary["first_run_error"] = await probe.first_error(driven.ids)
        finally:
            await probe.close()
        result.update(summary)
        result.update(driven.extra)
        if statement_log is not None:
            result["statement_mix"] = await asyncio.to_thread(
                statement_log.stop, summary["runs"], {probe_pid}
            )
        if setup.get("path_note"):
            result["path"] = setup["path_note"]
        result["enqueue_errors"] = len(driven.errors)
        if driven.errors:
            result["first_enqueue_error"] = driven.errors[0]
        result["client_wall_s"] = round(driven.wall_s, 3)
        result["engine"] = engine_figures | {
            "cpu_ms_per_run": per_run_ms(engine_figures, summary["runs"]),
            "cpu_utilisation": round(engine_figures["cpu_s"] / max(driven.wall_s, 1e-9), 2),
        }
        if db_figures is not None:
            result["database"] = db_figures | {
                "cpu_ms_per_run": per_run_ms(db_figures, summary["runs"])
            }
        if c0 is not None and c0b is not None and c1 is not None:
            total = c1["commits"] - c0b["commits"]
            null_cost = c0b["commits"] - c0["commits"]
            harness = 0
            net = total - null_cost - harness
            runs = max(1, summary["runs"])
            result["commits"] = {
                "total": total,
                "engine_start_stop": null_cost,
                "harness": harness,
                "net": net,
                "per_workflow": round(net / runs, 3),
                "per_workflow_raw": round(total / runs, 3),
                "per_step": round(net / max(1, summary["steps"]), 3),
                "rollbacks": c1["rollbacks"] - c0b["rollbacks"],
                "settled": bool(c0["stable"] and c0b["stable"] and c1["stable"]),
                "rows_by_table": pg.table_deltas(c0b["tables"], c1["tables"], runs),
            }
        if durable is not None:
            result["durable"] = durable_block(durable, null_durable, summary["runs"])
        # W3: requests the driver dropped (engine not keeping up) started no run
        expected = int(driven.extra.get("expected_runs", n))
        result["runs_expected"] = expected
        result["ok"] = summary["failed"] == 0 and summary["runs"] == expected
        if not result["ok"]:
            result["error"] = (
                f"{summary['failed']} run(s) did not succeed, "
                f"{summary['runs']} of {expected} final"
                + (f"; first error: {summary.get('first_run_error')}" if summary["failed"] else "")
            )
    except BenchmarkError as exc:
        result["error"] = str(exc)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        _release(holds)
        if db is not None:
            with contextlib.suppress(Exception):
                await drop_database(ctx, db)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


# -- W1 / W2 ------------------------------------------------------------------------------


def closed_loop_driver(ctx: Context, workflow_id: str, n: int, tag: str) -> Driver:
    async def drive(
        http: aiohttp.ClientSession, base: str, setup: dict[str, Any], probe: LedgerProbe
    ) -> DriveResult:
        return await closed_loop(
            http,
            base,
            workflow_id,
            n,
            probe,
            inflight=ctx.inflight,
            poll=ctx.poll,
            tag=tag,
            timeout=ctx.timeout,
        )

    return drive


async def run_w1(
    ctx: Context,
    backend: str,
    n: int,
    *,
    profile_to: Path | None = None,
    trace_commits_to: Path | None = None,
) -> dict[str, Any]:
    """W1; with ``profile_to`` (py-spy) and/or ``trace_commits_to`` it is a diagnostic run
    (named ``W1-profile``): its figures are skewed by the instruments and not compared."""
    definition = w1_definition()
    diagnostic = profile_to is not None or trace_commits_to is not None
    return await run_engine_workload(
        ctx,
        backend,
        name="W1-profile" if diagnostic else "W1",
        definition=definition,
        n=n,
        drive=closed_loop_driver(ctx, definition["id"], n, "w1"),
        profile_to=profile_to,
        trace_commits_to=trace_commits_to,
        log_statements=diagnostic and backend == "postgresql",
        measure_commits=True,
    )


async def run_w2(ctx: Context, backend: str, n: int, fanout: int = 50) -> dict[str, Any]:
    definition = w2_definition(fanout)
    result = await run_engine_workload(
        ctx,
        backend,
        name="W2",
        definition=definition,
        n=n,
        drive=closed_loop_driver(ctx, definition["id"], n, "w2"),
    )
    result["fanout"] = fanout
    if result.get("steps_per_run") is not None and result["steps_per_run"] != fanout + 2:
        result["ok"] = False
        result["error"] = (
            f"expected {fanout + 2} steps per run, the ledger has {result['steps_per_run']}"
        )
    return result


# -- W3 -----------------------------------------------------------------------------------


async def run_w3(
    ctx: Context, backend: str, *, rate: float, duration: float, max_outstanding: int = 1000
) -> dict[str, Any]:
    definition = w1_definition("bench-w3", source="trigger.body.i")

    async def drive(
        http: aiohttp.ClientSession, base: str, setup: dict[str, Any], probe: LedgerProbe
    ) -> DriveResult:
        trigger_id = setup.get("trigger_id")
        if trigger_id:
            url = f"{base}/hooks/{trigger_id}"

            def body_for(i: int) -> dict[str, Any]:
                return {"i": i}

            def headers_for(i: int) -> dict[str, str]:
                return {"X-Delivery-Id": f"w3-{i}"}
        else:
            url = f"{base}/api/v1/workflows/{definition['id']}/execute"

            def body_for(i: int) -> dict[str, Any]:
                return {"trigger": {"body": {"i": i}}, "requestId": f"w3-{i}"}

            def headers_for(i: int) -> dict[str, str]:
                return {}

        started = time.perf_counter()
        records, counters = await fixed_rate(
            http,
            url,
            rate=rate,
            duration=duration,
            tag="w3",
            max_outstanding=max_outstanding,
            timeout=ctx.timeout,
            headers_for=headers_for,
            body_for=body_for,
        )
        ids = [r["execution_id"] for r in records if "execution_id" in r]
        errors = [r["error"] for r in records if "error" in r]
        await wait_final(probe, ids, poll=max(ctx.poll, 0.02), timeout=ctx.timeout)
        timings = {t.id: t for t in await probe.timings(ids)}
        complete = []
        for r in records:
            t = timings.get(r.get("execution_id"))  # type: ignore[arg-type]
            if t is not None and t.ended_at is not None:
                complete.append(t.ended_at.timestamp() - r["sent_wall"])
        acks = [r["ack_s"] for r in records if r.get("status") == 202]
        extra = {
            "rate": rate,
            "duration_s": duration,
            "expected_runs": counters["requests_sent"] - len(errors),
            "w3": counters
            | {
                "ack_202": latency_summary(acks),
                "post_to_complete": latency_summary(complete),
                "errors": len(errors),
                "first_error": errors[0] if errors else None,
                "statuses": _count(str(r.get("status", "error")) for r in records),
            },
        }
        if not trigger_id:
            extra["path_fallback"] = True
        return DriveResult(ids, errors, time.perf_counter() - started, extra)

    result = await run_engine_workload(
        ctx,
        backend,
        name="W3",
        definition=definition,
        n=max(1, round(rate * duration)),
        drive=drive,
        webhook=True,
        warm_trigger=lambda i: {"body": {"i": i}},
    )
    if result.get("path_fallback"):
        result["path"] = (
            "POST /api/v1/workflows/{id}/execute (webhook trigger unavailable: "
            f"{result.get('path', '?')})"
        )
    return result


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


# -- W4 -----------------------------------------------------------------------------------

W4_WORKFLOWS = 10
W4_BATCH = 100_000
#: run ids are UUIDv7 of their created_at, as the engine makes them (time-ordered: the
#: partition key on PostgreSQL when partitioning is on, docs/partitioning.md)
_W4_LOAD = """
WITH ins AS (
  INSERT INTO workflow_executions (
    id, workflow_id, workflow_version, request_id, status, trigger, tenant_id,
    created_at, started_at, ended_at, fencing_token, recovery_count, cancel_requested)
  SELECT encode(set_byte(overlay(r.b PLACING substring(int8send(floor(extract(epoch FROM
           %(base)s::timestamptz + g * interval '1 ms') * 1000)::bigint) FROM 3) FROM 1 FOR 6),
           6, (get_byte(r.b, 6) & 15) | 112), 'hex')::uuid,
         'bench-w4-' || lpad((g %% %(workflows)s)::text, 2, '0'),
         1, 'load-' || g, 'Succeeded', jsonb_build_object('i', g), 'default',
         %(base)s::timestamptz + g * interval '1 ms',
         %(base)s::timestamptz + g * interval '1 ms' + interval '2 ms',
         %(base)s::timestamptz + g * interval '1 ms' + interval '9 ms',
         1, 0, false
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g,
       LATERAL (SELECT uuid_send(gen_random_uuid()) AS b WHERE g IS NOT NULL) AS r
  RETURNING id, request_id, started_at
)
INSERT INTO action_executions (
  id, execution_id, node_id, action_type, attempt, status, parameters, outputs,
  started_at, ended_at)
SELECT gen_random_uuid(), ins.id, n.node, 'core.echo', 1, 'Succeeded',
       jsonb_build_object('message', ins.request_id), jsonb_build_object('echo', ins.request_id),
       ins.started_at + n.off, ins.started_at + n.off + interval '3 ms'
FROM ins CROSS JOIN (VALUES ('first', interval '0 ms'), ('second', interval '4 ms')) AS n(node, off)
"""
#: what GET /api/v1/executions?workflowId=... asks (run_queries.executions: keyset page of
#: 50 + 1 rows, newest first, tie broken by id)
_W4_LIST_SQL = (
    "SELECT * FROM workflow_executions WHERE tenant_id = 'default' AND workflow_id = %s "
    "ORDER BY created_at DESC, id DESC LIMIT 51"
)
_W4_ONE_SQL = "SELECT * FROM workflow_executions WHERE id = %s"
_W4_ACTIONS_SQL = (
    "SELECT * FROM action_executions WHERE execution_id = %s ORDER BY started_at, node_id, attempt"
)


def _w4_load(url: str, rows: int, max_seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Bulk-load ``rows`` executions (+2 attempt rows each) server-side, in batches."""
    started = time.monotonic()
    loaded = 0
    with psycopg.connect(url, autocommit=True) as conn:
        base = conn.execute("SELECT now() - interval '40 days'").fetchone()[0]  # type: ignore[index]
        while loaded < rows:
            hi = min(rows, loaded + W4_BATCH)
            conn.execute(
                _W4_LOAD,
                {"workflows": W4_WORKFLOWS, "base": base, "lo": loaded + 1, "hi": hi},
            )
            loaded = hi
            elapsed = time.monotonic() - started
            log(f"  W4: loaded {loaded:,} executions in {elapsed:.0f} s")
            if elapsed > max_seconds and loaded < rows:
                log(f"  W4: stopping the load at {loaded:,} rows (--w4-max-load-seconds)")
                break
        load_s = time.monotonic() - started
        conn.execute("VACUUM (ANALYZE) workflow_executions")
        conn.execute("VACUUM (ANALYZE) action_executions")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        db_size = size.fetchone()[0]  # type: ignore[index]
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM workflow_executions),"
            " (SELECT count(*) FROM action_executions)"
        ).fetchone()
    return {
        "rows_requested": rows,
        "executions": int(counts[0]) if counts else loaded,
        "action_rows": int(counts[1]) if counts else None,
        "load_s": round(load_s, 1),
        "vacuum_analyze_s": round(time.monotonic() - started - load_s, 1),
        "database_size": db_size,
        "partial": loaded < rows,
    }


def _w4_reused(url: str, name: str) -> dict[str, Any]:
    """What a reused W4 database holds (``--w4-database``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM workflow_executions),"
            " (SELECT count(*) FROM action_executions),"
            " pg_size_pretty(pg_database_size(current_database())),"
            " (SELECT relkind = 'p' FROM pg_class WHERE relname = 'workflow_executions')"
        ).fetchone()
    if row is None or not row[0]:
        raise BenchmarkError(f"--w4-database {name}: it holds no executions")
    return {
        "reused_database": name,
        "executions": int(row[0]),
        "action_rows": int(row[1]),
        "database_size": row[2],
        "partitioned": bool(row[3]),
    }


def _w4_sample_ids(url: str, count: int) -> tuple[list[uuid.UUID], list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM workflow_executions TABLESAMPLE SYSTEM (1) LIMIT %s", (count,)
            ).fetchall()
        ]
        if len(ids) < count:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM workflow_executions ORDER BY random() LIMIT %s", (count,)
                ).fetchall()
            ]
        workflows = [r[0] for r in conn.execute("SELECT id FROM workflows ORDER BY id").fetchall()]
    random.Random(8).shuffle(ids)
    return ids, workflows


def _w4_sql_timings(
    url: str, workflow_id: str, ids: list[uuid.UUID], queries: int
) -> dict[str, Any]:
    """The same reads straight on the database (what the API's time is made of)."""
    list_s: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(10):
            conn.execute(_W4_LIST_SQL, (workflow_id,), prepare=True).fetchall()
        for _ in range(queries):
            t = time.perf_counter()
            conn.execute(_W4_LIST_SQL, (workflow_id,), prepare=True).fetchall()
            list_s.append(time.perf_counter() - t)

        def one_with_actions(prepare: bool) -> list[float]:
            timings = []
            for i in range(queries):
                key = ids[i % len(ids)]
                t = time.perf_counter()
                conn.execute(_W4_ONE_SQL, (key,), prepare=prepare).fetchall()
                conn.execute(_W4_ACTIONS_SQL, (key,), prepare=prepare).fetchall()
                timings.append(time.perf_counter() - t)
            return timings

        one_s = one_with_actions(prepare=True)
        # unprepared: planned every time, as the engine sent them before
        # DATAWORKFLOWS_PG_PREPARED_STATEMENTS (and still does behind an old PgBouncer)
        one_unprepared = one_with_actions(prepare=False)
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + _W4_LIST_SQL, (workflow_id,)).fetchall()
        one_plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + _W4_ACTIONS_SQL, (ids[0],))
        one_plan_rows = one_plan.fetchall()
    return {
        "newest_50": latency_summary(list_s),
        "one_with_actions": latency_summary(one_s),
        "one_with_actions_unprepared": latency_summary(one_unprepared),
        "newest_50_plan": [r[0] for r in plan],
        "actions_plan": [r[0] for r in one_plan_rows],
    }


async def run_w4(
    ctx: Context, *, rows: int, queries: int, max_load_seconds: float
) -> dict[str, Any]:
    """Ledger reads at ``rows`` executions (PostgreSQL), through the HTTP API."""
    result: dict[str, Any] = {"workload": "W4", "backend": "postgresql", "ok": False}
    started = time.monotonic()
    db: BenchDB | None = None
    engine: EngineProcesses | None = None
    try:
        if ctx.w4_database is not None:
            # a ledger an earlier `--only W4 --keep-databases` loaded: loading needs no
            # quiet machine, the timed reads do
            db = BenchDB("postgresql", pg.database_url(ctx.pg_admin_url or "", ctx.w4_database))
            plain = pg.database_url(ctx.pg_admin_url or "", ctx.w4_database, driver=False)
            result["load"] = await asyncio.to_thread(_w4_reused, plain, ctx.w4_database)
            result["partitioned"] = result["load"]["partitioned"]
            engine = await _engine(ctx, db, "W4-postgresql", processes=1)
        else:
            db = await prepare_database(ctx, "postgresql", "w4_pg")
            result["partitioned"] = ctx.partitioned
            if ctx.partitioned:
                await asyncio.to_thread(pg.partition_ledger, db.url)
            engine = await _engine(ctx, db, "W4-postgresql", processes=1)
            plain = pg.database_url(ctx.pg_admin_url or "", db.name or "", driver=False)
        async with http_session() as http:
            if ctx.w4_database is None:
                for k in range(W4_WORKFLOWS):
                    definition = w1_definition(f"bench-w4-{k:02d}")
                    await create_workflow(http, engine.base_url, definition)
                result["load"] = await asyncio.to_thread(
                    _w4_load, plain, rows, max_load_seconds, ctx.log
                )
            ids, workflows = await asyncio.to_thread(_w4_sample_ids, plain, queries)
            if not ids:
                raise BenchmarkError("no executions were loaded")
            target = "bench-w4-03" if "bench-w4-03" in workflows else workflows[0]
            result["workflow"] = target

            # newest 50 of a workflow: the API's list endpoint if there is one
            list_url = f"{engine.base_url}/api/v1/executions"
            list_params = {"workflowId": target, "limit": "50"}
            async with http.get(list_url, params=list_params) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
            items = body.get("items") if isinstance(body, dict) else None
            has_list = isinstance(items, list) and 0 < len(items) <= 50
            if has_list:
                wrong = [i for i in items if i.get("workflowId") not in (None, target)]
                if wrong:
                    has_list = False
            result["newest_50_via"] = (
                "GET /api/v1/executions?workflowId=...&limit=50"
                if has_list
                else "SQL (no list endpoint answered GET /api/v1/executions?workflowId=...)"
            )

            async def timed_get(url: str, params: dict[str, str] | None = None) -> float:
                t = time.perf_counter()
                async with http.get(url, params=params) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise BenchmarkError(f"GET {url} answered {resp.status}")
                return time.perf_counter() - t

            api_list: list[float] = []
            if has_list:
                for _ in range(10):
                    await timed_get(list_url, list_params)
                for _ in range(queries):
                    api_list.append(await timed_get(list_url, list_params))
            api_one: list[float] = []
            for key in ids[:10]:
                await timed_get(f"{engine.base_url}/api/v1/executions/{key}")
            for i in range(queries):
                key = ids[i % len(ids)]
                api_one.append(await timed_get(f"{engine.base_url}/api/v1/executions/{key}"))
        sql = await asyncio.to_thread(_w4_sql_timings, plain, target, ids, queries)
        result["api"] = {
            "newest_50": latency_summary(api_list) if has_list else None,
            "one_with_actions": latency_summary(api_one),
        }
        result["sql"] = sql
        result["queries"] = queries
        headline_list = result["api"]["newest_50"] or sql["newest_50"]
        result["newest_50_p50_ms"] = headline_list["p50_ms"]
        result["newest_50_p95_ms"] = headline_list["p95_ms"]
        result["one_p50_ms"] = result["api"]["one_with_actions"]["p50_ms"]
        result["one_p95_ms"] = result["api"]["one_with_actions"]["p95_ms"]
        result["ok"] = True
    except BenchmarkError as exc:
        result["error"] = str(exc)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        if db is not None and ctx.w4_database is None:
            with contextlib.suppress(Exception):
                await drop_database(ctx, db)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result
