"""Workload ``sched``: how late an idle engine fires a schedule (issue 13, item 8).

``--sched-triggers`` (4) ``schedule`` triggers fire every second, staggered over the
second (trigger *i* at ``+ i / n`` s), on a 1-step ``core.echo`` workflow; a
``dataworkflows serve`` process runs for ``--sched-duration`` (10) seconds and nothing
else happens. The engine's scheduler sleeps until each due time, so every fire is
measured from its due time (``trigger.scheduledTime``), all on the engine's own clock:

* **wake**: ``trigger.firedAt`` (the clock read when the scheduler's tick began);
* **queued**: the run's ``created_at`` (the enqueue write that starts it, taken inside
  the kernel just before that write commits) -- the figure held against 50 ms;
* **started**: the run's ``started_at`` (a worker has it).

Fire times before the engine was up (plus one second of settling) are left out: they
are late by the engine's start-up, not by the scheduler.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import BenchmarkError, latency_summary, loadavg
from benchmarks.probe import LedgerProbe
from benchmarks.workloads import (
    BenchDB,
    Context,
    _engine,
    drop_database,
    prepare_database,
    setup_workflow,
)

WORKFLOW_ID = "bench-sched"
#: the target of issue 13: a schedule fires within 50 ms of its due time on an idle engine
TARGET_MS = 50.0
#: seconds between creating the triggers and their first fire time (engine start-up)
LEAD_S = 3.0
SETTLE_S = 1.0


def definition() -> dict[str, Any]:
    return {
        "id": WORKFLOW_ID,
        "displayName": "Benchmark: scheduled echo",
        "nodes": [
            {
                "id": "tick",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.scheduledTime }}"},
            }
        ],
    }


def triggers(count: int, first: datetime) -> list[dict[str, Any]]:
    """``count`` triggers firing every second from ``first``, staggered by 1/count s."""
    return [
        {
            "type": "schedule",
            "name": f"bench-{i}",
            "config": {
                "intervalSeconds": 1,
                "startAt": (first + timedelta(seconds=i / count)).isoformat(),
            },
        }
        for i in range(count)
    ]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def summarize(rows: list[tuple[Any, dict[str, Any]]], after: datetime) -> dict[str, Any]:
    """Lags of the fires due at or after ``after``, and exactly-once bookkeeping."""
    wake, queued, started = [], [], []
    keys = set()
    for timing, payload in rows:
        keys.add((payload["triggerId"], payload["scheduledTime"]))
        due = _parse(payload["scheduledTime"])
        if due < after:
            continue
        wake.append((_parse(payload["firedAt"]) - due).total_seconds())
        queued.append((timing.created_at - due).total_seconds())
        if timing.started_at is not None:
            started.append((timing.started_at - due).total_seconds())
    return {
        "fires": len(rows),
        "measured": len(queued),
        "duplicates": len(rows) - len(keys),
        "wake": latency_summary(wake),
        "queued": latency_summary(queued),
        "started": latency_summary(started),
    }


async def run_sched(
    ctx: Context, backend: str, *, count: int = 4, duration: float = 10.0
) -> dict[str, Any]:
    """Run the ``sched`` workload on one backend; returns its result record."""
    result: dict[str, Any] = {
        "workload": "sched",
        "backend": backend,
        "ok": False,
        "config": {"triggers": count, "interval_s": 1, "duration_s": duration},
        "loadavg_before": loadavg(),
    }
    db: BenchDB | None = None
    started = time.monotonic()
    try:
        db = await prepare_database(ctx, backend, f"sched_{backend[:2]}")
        first = datetime.fromtimestamp(math.ceil(time.time() + LEAD_S), UTC)
        await setup_workflow(db, definition(), webhook=False, triggers=triggers(count, first))
        engine = await _engine(ctx, db, f"sched-{backend}", processes=1)
        try:
            measure_from = max(first, datetime.now(UTC) + timedelta(seconds=SETTLE_S))
            # the engine fires on its own: the harness only lets the time pass
            await asyncio.sleep((measure_from - datetime.now(UTC)).total_seconds() + duration)
        finally:
            await asyncio.to_thread(engine.stop)
        probe = await LedgerProbe(db.url).open()
        try:
            rows = await probe.runs_of(WORKFLOW_ID)
        finally:
            await probe.close()
        figures = summarize(rows, measure_from)
        if not figures["measured"]:
            raise BenchmarkError("no fire time was measured")
        result.update(figures)
        result["ok"] = True
    except BenchmarkError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # a report is still written
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if db is not None:
            await drop_database(ctx, db)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        result["loadavg_after"] = loadavg()
    return result


def render(results: list[dict[str, Any]]) -> list[str]:
    """Table rows of the terminal report (see benchmarks.cli.render)."""
    rows = []
    for r in results:
        if not r.get("ok"):
            continue
        for name in ("wake", "queued", "started"):
            figures = r[name]
            rows.append(
                [
                    r["backend"],
                    name,
                    figures["count"],
                    figures["p50_ms"],
                    figures["p95_ms"],
                    figures["p99_ms"],
                    figures["max_ms"],
                ]
            )
    return rows
