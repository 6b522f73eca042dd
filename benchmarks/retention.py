"""``prune``: W1's latency while the pruner deletes a large backlog of old runs (PostgreSQL).

Issue #20's target: pruning 1 M old runs while W1 runs raises W1's p99 by at most 20 %.

1. ``--prune-rows`` old runs (40 days, ``Succeeded``, 2 attempt rows each: W4's loader)
   are bulk-loaded beside W1's workflow; ``serve`` runs with its own pruner off.
2. Rounds alternate: W1 alone (``--n`` runs, closed loop), then W1 again while
   ``dataworkflows ledger prune`` (a separate process, the engine's batches and pauses)
   deletes the backlog; the backlog is reloaded between rounds, so every "with" round
   prunes the same amount. Alternating keeps the machine's drift out of the comparison.
3. Reported: W1 p50/p99 latency per round, alone and while pruning, the ratio of the
   medians of p99, and the prune's runs/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import pg
from benchmarks.common import BenchmarkError
from benchmarks.engine import EngineProcesses
from benchmarks.probe import LedgerProbe
from benchmarks.workloads import (
    W4_WORKFLOWS,
    BenchDB,
    Context,
    _w4_load,
    closed_loop,
    create_workflow,
    drop_database,
    http_session,
    prepare_database,
    setup_workflow,
    summarize_runs,
    w1_definition,
)


async def _w1_round(
    ctx: Context, engine: EngineProcesses, db: BenchDB, n: int, tag: str
) -> dict[str, Any]:
    probe = await LedgerProbe(db.url).open()
    try:
        async with http_session(limit=max(100, ctx.inflight * 2)) as http:
            driven = await closed_loop(
                http,
                engine.base_url,
                "bench-w1",
                n,
                probe,
                inflight=ctx.inflight,
                poll=ctx.poll,
                tag=tag,
                timeout=ctx.timeout,
            )
        summary = summarize_runs(
            await probe.timings(driven.ids), await probe.step_rows(driven.ids), n
        )
    finally:
        await probe.close()
    if summary["failed"] or driven.errors:
        failed = summary["failed"]
        raise BenchmarkError(f"W1 round {tag}: {failed} failed runs, {driven.errors[:1]}")
    return {
        "wall_s": round(driven.wall_s, 2),
        "runs_per_s": summary["runs_per_s"],
        "p50_ms": summary["latency"]["p50_ms"],
        "p99_ms": summary["latency"]["p99_ms"],
    }


def _prune_command(db_url: str) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    env["DATAWORKFLOWS_DATABASE_URL"] = db_url
    command = [sys.executable, "-m", "dataworkflows.cli.main", "ledger", "prune", "--json"]
    return command, env


async def run_prune(
    ctx: Context, *, rows: int, n: int, rounds: int, max_load_seconds: float
) -> dict[str, Any]:
    """See the module docstring."""
    result: dict[str, Any] = {"workload": "prune", "backend": "postgresql", "ok": False}
    started = time.monotonic()
    db: BenchDB | None = None
    engine: EngineProcesses | None = None
    try:
        db = await prepare_database(ctx, "postgresql", "prune_pg")
        await setup_workflow(db, w1_definition(), webhook=False)
        result["partitioned"] = ctx.partitioned
        if ctx.partitioned:
            await asyncio.to_thread(pg.partition_ledger, db.url)
        engine = EngineProcesses(
            db.url,
            log_dir=ctx.work_dir / "logs",
            name="prune-postgresql",
            settings=ctx.engine_settings() | {"prune_interval_seconds": "0"},
        )
        await engine.start()
        async with http_session() as http:
            for k in range(W4_WORKFLOWS):
                await create_workflow(http, engine.base_url, w1_definition(f"bench-w4-{k:02d}"))
        plain = pg.database_url(ctx.pg_admin_url or "", db.name or "", driver=False)
        command, env = _prune_command(db.url)
        await _w1_round(ctx, engine, db, max(ctx.warmup, 20), "warmup")
        alone: list[dict[str, Any]] = []
        pruning: list[dict[str, Any]] = []
        prunes: list[dict[str, Any]] = []
        for r in range(rounds):
            if ctx.partitioned and r:  # the partition the last round dropped, again
                await asyncio.to_thread(pg.partition_ledger, db.url, enable=False)
            load = await asyncio.to_thread(_w4_load, plain, rows, max_load_seconds, ctx.log)
            alone.append(await _w1_round(ctx, engine, db, n, f"alone-{r}"))
            t0 = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            with_prune = await _w1_round(ctx, engine, db, n, f"pruning-{r}")
            out, err = await proc.communicate()
            seconds = time.monotonic() - t0
            if proc.returncode != 0:
                raise BenchmarkError(f"ledger prune failed: {err.decode()[-500:]}")
            report = _json_tail(out.decode())
            loaded = rows if not load["partial"] else 0
            if report["runs"] < loaded:
                raise BenchmarkError(f"the prune deleted {report['runs']} of {loaded} old runs")
            pruning.append(with_prune)
            prunes.append(
                {
                    "runs": report["runs"],
                    "batches": report["batches"],
                    "seconds": round(seconds, 1),
                    "runs_per_s": round(report["runs"] / max(seconds, 1e-9)),
                }
            )
            ctx.log(f"  prune round {r}: alone {alone[-1]}, pruning {with_prune}, {prunes[-1]}")
        p99_alone = statistics.median(a["p99_ms"] for a in alone)
        p99_pruning = statistics.median(p["p99_ms"] for p in pruning)
        result.update(
            rows=rows,
            n=n,
            rounds=rounds,
            alone=alone,
            pruning=pruning,
            prunes=prunes,
            p99_alone_ms=p99_alone,
            p99_pruning_ms=p99_pruning,
            p99_ratio=round(p99_pruning / max(p99_alone, 1e-9), 3),
            ok=True,
        )
    except BenchmarkError as exc:
        result["error"] = str(exc)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        if db is not None:
            with contextlib.suppress(Exception):
                await drop_database(ctx, db)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def _json_tail(text: str) -> dict[str, Any]:
    import json

    start = text.index("{")
    return dict(json.loads(text[start:]))
