"""Peer mode: W1 on DBOS Transact, measured exactly like ours (see :mod:`benchmarks.workloads`).

The DBOS process (:mod:`benchmarks.peer_dbos`) uses a scratch PostgreSQL database of its
own on the same server as its system database. Lifecycle: a setup process (DBOS creates
its tables, ``warmup`` workflows), the settled commit counter, a null process (launch and
shut down, no workflow), the counter again, then the measured process; the counter once
more after it exits. Latencies come from ``dbos.workflow_status`` (``created_at`` →
``completed_at``, epoch milliseconds). If ``dbos`` is not installed or fails, the result
says why and the rest of the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import sys
import time
from typing import Any

import psycopg

from benchmarks import pg
from benchmarks.common import BenchmarkError, latency_summary, loadavg
from benchmarks.engine import REPO_ROOT
from benchmarks.procstats import PostgresMeter, ProcessMeter, per_run_ms
from benchmarks.workloads import BenchDB, Context, drop_database

INSTALL_HINT = (
    "install the benchmark extra: python3 -m uv run --all-packages --extra bench "
    "python -m benchmarks run ..."
)


class _PeerProcess:
    def __init__(self, ctx: Context, url: str, n: int, tag: str, name: str) -> None:
        self.ctx = ctx
        self.args = [
            sys.executable,
            "-m",
            "benchmarks.peer_dbos",
            "--db-url",
            url,
            "--n",
            str(n),
            "--inflight",
            str(ctx.inflight),
            "--tag",
            tag,
            "--timeout",
            str(ctx.timeout),
        ]
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log_dir = self.ctx.work_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(log_dir / f"{self.name}.log", "ab")  # noqa: ASYNC230 - closed in finish
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
        )

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise BenchmarkError(
                            f"the DBOS process exited ({await self.proc.wait()}) before "
                            f"{kind}; see {self.ctx.work_dir}/logs/{self.name}.log"
                        )
                    text = line.decode(errors="replace").rstrip()
                    if not text.startswith("@@"):
                        self._log.write(line)
                        continue
                    got, _, payload = text[2:].partition(" ")
                    data = json.loads(payload or "{}")
                    if got == "ERROR":
                        raise BenchmarkError(f"DBOS: {data.get('message')}")
                    if got == kind:
                        return dict(data)
        except TimeoutError:
            raise BenchmarkError(f"the DBOS process did not report {kind} in time") from None

    async def say(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.say()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._log.close()


async def _peer_cycle(ctx: Context, url: str, n: int, tag: str, name: str) -> dict[str, Any]:
    """One DBOS process: launch, run ``n`` workflows, shut down."""
    peer = _PeerProcess(ctx, url, n, tag, name)
    await peer.start()
    try:
        await peer.expect("LAUNCHED", 120)
        await peer.say()
        return await peer.expect("DONE", ctx.timeout + 60)
    finally:
        await peer.finish()


def _dbos_timings(url: str, tag: str) -> tuple[list[tuple[int, int | None, int]], int, str]:
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
    return [(int(r[0]), r[1], int(r[2])) for r in rows], int(steps[0]) if steps else 0, statuses


async def run_dbos_peer(ctx: Context, n: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "workload": "W1-DBOS",
        "backend": "postgresql",
        "ok": False,
        "n": n,
        "config": {"inflight": ctx.inflight, "warmup": ctx.warmup, "path": "DBOS.start_workflow"},
    }
    started = time.monotonic()
    if importlib.util.find_spec("dbos") is None:
        result["skipped"] = True
        result["error"] = f"dbos is not installed in this environment; {INSTALL_HINT}"
        return result
    result["dbos_version"] = importlib.metadata.version("dbos")
    if ctx.pg_admin_url is None:
        result["error"] = "no PostgreSQL URL given (--pg-url)"
        return result
    name = f"{ctx.db_prefix}_dbos"[:63]
    db = BenchDB("postgresql", pg.database_url(ctx.pg_admin_url, name), name=name)
    plain = pg.database_url(ctx.pg_admin_url, name, driver=False)
    admin = ctx.pg_admin_url
    try:
        await asyncio.to_thread(pg.create_database, admin, name)
        await _peer_cycle(ctx, plain, ctx.warmup, "warmup", "dbos-setup")
        c0 = await asyncio.to_thread(pg.settled_counters, admin, name)
        await _peer_cycle(ctx, plain, 0, "null", "dbos-null")
        c0b = await asyncio.to_thread(pg.settled_counters, admin, name)

        peer = _PeerProcess(ctx, plain, n, "run", "dbos-measured")
        await peer.start()
        try:
            await peer.expect("LAUNCHED", 120)
            assert peer.proc is not None
            meter = ProcessMeter([peer.proc.pid])
            db_meter = PostgresMeter(name, admin)
            result["loadavg_before"] = loadavg()
            meter.start()
            db_meter.start()
            try:
                await peer.say()
                done = await peer.expect("DONE", ctx.timeout + 60)
            finally:
                engine_figures = meter.stop()
                db_figures = db_meter.stop()
            result["loadavg_after"] = loadavg()
        finally:
            await peer.finish()
        c1 = await asyncio.to_thread(pg.settled_counters, admin, name)

        rows, steps, statuses = await asyncio.to_thread(_dbos_timings, plain, "run")
        if not rows:
            raise BenchmarkError("DBOS recorded no workflow")
        first = min(r[0] for r in rows)
        last = max(r[2] for r in rows)
        span = max((last - first) / 1000.0, 1e-9)
        runs = len(rows)
        total = c1["commits"] - c0b["commits"]
        null_cost = c0b["commits"] - c0["commits"]
        result.update(
            {
                "runs": runs,
                "statuses": statuses,
                "ledger_span_s": round(span, 3),
                "runs_per_s": round(runs / span, 1),
                "steps": steps,
                "steps_per_run": round(steps / runs, 2),
                "steps_per_s": round(steps / span, 1),
                "latency": latency_summary([(r[2] - r[0]) / 1000.0 for r in rows]),
                "service_latency": latency_summary(
                    [(r[2] - r[1]) / 1000.0 for r in rows if r[1] is not None]
                ),
                "client_wall_s": round(done.get("wall_s", 0.0), 3),
                "enqueue_errors": done.get("errors", 0),
                "engine": engine_figures | {"cpu_ms_per_run": per_run_ms(engine_figures, runs)},
                "database": db_figures | {"cpu_ms_per_run": per_run_ms(db_figures, runs)},
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
            }
        )
        result["ok"] = runs == n and statuses == "SUCCESS" and not done.get("errors")
        if not result["ok"]:
            result["error"] = (
                f"{runs} of {n} DBOS workflows recorded (statuses {statuses}); "
                f"first error: {done.get('first_error')}"
            )
    except BenchmarkError as exc:
        result["error"] = str(exc)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await drop_database(ctx, db)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result
