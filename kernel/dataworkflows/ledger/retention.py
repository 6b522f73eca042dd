"""Retention: deleting finished runs past their policy, in small batches, and the
ledger's size.

A run is deleted with its attempts, events and (through the foreign keys) everything
else that belongs to it; resource links outlive it (their ``execution_id`` becomes null:
the external object still exists). Never deleted: a run that is not final (queued,
running, resumed, waiting on a child), a run whose dead letter has not been requeued (an
operator still has to look at it), and a child run (subworkflow) whose parent has not
ended (the parent waits on it, or will read its outcome when it resumes).

The policy (docs/semantics.md, "Retention"): succeeded and cancelled runs are kept
``days``, failed runs ``failed_days`` (longer by default: they are what people come back
for), both counted from the run's end; and, when ``max_runs`` is set, at most that many
finished runs per workflow (the newest). ``0`` switches a rule off.

Each batch is one short transaction of at most ``batch_size`` runs, so the engine's own
writes (which share SQLite's single writer) wait at most one batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text

from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    action_executions,
    dead_letters,
    execution_events,
    run_variables,
    workflow_executions,
    workflows,
)
from dataworkflows.db.partition_models import execution_requests
from dataworkflows.ledger.partition_drop import drop_prunable
from dataworkflows.measurements import TableSize

_runs = workflow_executions.c
#: statuses a run is kept ``days`` in; ``Failed`` is kept ``failed_days``
_ENDED_OK = ("Succeeded", "Cancelled")
_FINAL = (*_ENDED_OK, "Failed")
#: PostgreSQL advisory lock of the pruner ("dw-prune" as a number)
_LOCK_KEY = int.from_bytes(b"dw-prune", "big") & 0x7FFF_FFFF_FFFF_FFFF
#: tables whose rows belong to runs, for counting what a prune removes
_CHILDREN = {"action_executions": action_executions, "execution_events": execution_events}


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished runs are kept; ``0`` switches a rule off."""

    days: float = 30.0
    failed_days: float = 90.0
    max_runs: int = 0


@dataclass
class PruneReport:
    """What a prune deleted (or, dry, would delete): rows per table."""

    dry_run: bool
    runs: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_CHILDREN, 0))
    batches: int = 0
    #: the time partitions dropped whole (PostgreSQL, partitioned ledger), e.g. ``_p20261101``
    partitions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "runs": self.runs,
            "rows": {"workflow_executions": self.runs, **self.rows},
            "batches": self.batches,
            "partitions": self.partitions,
        }


class Pruner:
    """Deletes the runs a :class:`RetentionPolicy` no longer keeps, batch by batch."""

    def __init__(self, db: Database, policy: RetentionPolicy, *, batch_size: int = 500) -> None:
        self.db = db
        self.policy = policy
        self.batch_size = max(1, batch_size)

    def _doomed(self, now: datetime, overrides: dict[str, RetentionPolicy]) -> Any:
        """A SELECT of the ids of runs their policy no longer keeps (None: no rule is on):
        ``overrides`` (workflow id → policy) for their workflows, ``policy`` for the rest."""
        rules = _rules(self.policy, now, _runs.workflow_id.not_in(list(overrides)))
        for workflow_id, policy in overrides.items():
            rules.extend(_rules(policy, now, _runs.workflow_id == workflow_id))
        if not rules:
            return None
        waiting = select(dead_letters.c.execution_id).where(dead_letters.c.requeued_at.is_(None))
        # a child run whose parent has not ended: the parent may still read its outcome
        parents = workflow_executions.alias("parents")
        in_flight = select(parents.c.id).where(parents.c.status.not_in(_FINAL))
        return select(_runs.id).where(
            or_(*rules),
            _runs.id.not_in(waiting),
            or_(_runs.parent_execution_id.is_(None), _runs.parent_execution_id.not_in(in_flight)),
        )

    async def overrides(self, conn: Any) -> dict[str, RetentionPolicy]:
        """Workflows whose current version sets ``retention``: their whole policy (the
        fields it leaves out from this pruner's)."""
        rows = await conn.execute(
            select(workflows.c.id, workflows.c.retention).where(workflows.c.retention.is_not(None))
        )
        out = {}
        for workflow_id, raw in rows:
            if not raw:  # a JSON null
                continue
            out[workflow_id] = RetentionPolicy(
                days=_pick(raw, "days", self.policy.days),
                failed_days=_pick(raw, "failedDays", self.policy.failed_days),
                max_runs=int(_pick(raw, "maxRuns", self.policy.max_runs)),
            )
        return out

    async def _count(self, conn: Any, ids: Any, report: PruneReport) -> None:
        """Add the runs ``ids`` (a list or a SELECT of ids) and their rows to ``report``."""
        if isinstance(ids, list):
            report.runs += len(ids)
        else:
            total = await conn.execute(select(func.count()).select_from(ids.subquery()))
            report.runs += int(total.scalar_one())
        for name, table in _CHILDREN.items():
            rows = await conn.execute(
                select(func.count()).select_from(table).where(table.c.execution_id.in_(ids))
            )
            report.rows[name] += int(rows.scalar_one())

    async def prune(
        self,
        now: datetime,
        *,
        dry_run: bool = False,
        max_batches: int | None = None,
        pause: Callable[[float], Awaitable[None]] | None = None,
        exclusive: bool = False,
    ) -> PruneReport:
        """Delete what the policy no longer keeps as of ``now``; ``dry_run`` only counts.

        Stops when nothing is left or after ``max_batches``; ``pause(seconds the batch
        took)`` is awaited between batches (the engine's writes go first there; see
        :func:`dataworkflows.service.pruning.paced`). ``exclusive``: on
        PostgreSQL, stop at once when another process's pruner is in a batch (an
        advisory lock), instead of deleting the same runs beside it.
        """
        report = PruneReport(dry_run=dry_run)
        async with self.db.connect() as conn:
            doomed = self._doomed(now, await self.overrides(conn))
            if doomed is not None and dry_run:
                await self._count(conn, doomed, report)
        if doomed is None or dry_run:
            return report
        # a partitioned ledger: whole time ranges first, what is left batch by batch
        ages = (self.policy.days, self.policy.failed_days)
        # an empty partition goes once it is older than any run the policy keeps by age
        empty_before = now - timedelta(days=max(ages)) if all(ages) else None
        for part, rows in await drop_prunable(self.db, doomed, now, empty_before, pause):
            report.partitions.append(part.suffix)
            report.runs += rows.pop(workflow_executions.name)
            for name, count in rows.items():
                report.rows[name] += count
        while max_batches is None or report.batches < max_batches:
            batch_started = time.monotonic()
            async with self.db.begin() as conn:
                if exclusive and not self.db.is_sqlite:
                    taken = await conn.execute(select(func.pg_try_advisory_xact_lock(_LOCK_KEY)))
                    if not taken.scalar_one():
                        break
                batch = doomed.order_by(_runs.created_at).limit(self.batch_size)
                ids = list((await conn.execute(batch)).scalars().all())
                if not ids:
                    break
                await self._count(conn, ids, report)
                # children first: no reliance on the connection's foreign-key cascade
                for table in _CHILDREN.values():
                    await conn.execute(delete(table).where(table.c.execution_id.in_(ids)))
                await conn.execute(delete(workflow_executions).where(_runs.id.in_(ids)))
                # their request ids (kept here only when the ledger is partitioned)
                await conn.execute(
                    delete(execution_requests).where(execution_requests.c.execution_id.in_(ids))
                )
            report.batches += 1
            if len(ids) < self.batch_size:
                break
            took = time.monotonic() - batch_started
            await (pause(took) if pause is not None else asyncio.sleep(0))
        return report


#: the tables that grow with runs, as ``ledger stats`` reports them
LEDGER_TABLES = (
    workflow_executions,
    action_executions,
    execution_events,
    run_variables,
    dead_letters,
)


async def ledger_stats(db: Database) -> dict[str, Any]:
    """``{"tables": {name: {"rows", "bytes"}}, "runsByStatus": {status: n}}``: rows
    (exact) and bytes on disk (indexes included) of each ledger table; bytes are null
    where the database cannot tell (SQLite built without the ``dbstat`` table)."""

    async def query(conn: Any) -> dict[str, Any]:
        sizes = await _table_bytes(conn, db.is_sqlite)
        rows = await _exact_rows(conn)
        tables = {t.name: {"rows": rows[t.name], "bytes": sizes.get(t.name)} for t in LEDGER_TABLES}
        statuses = await conn.execute(
            select(_runs.status, func.count()).group_by(_runs.status).order_by(_runs.status)
        )
        return {"tables": tables, "runsByStatus": {s: int(n) for s, n in statuses}}

    return await db.read(query, "ledger stats")


async def _exact_rows(conn: Any) -> dict[str, int]:
    """``count(*)`` of each ledger table (a full scan each: SQLite, or the CLI)."""
    counts = {}
    for table in LEDGER_TABLES:
        counts[table.name] = int(
            (await conn.execute(select(func.count()).select_from(table))).scalar_one()
        )
    return counts


async def _table_bytes(conn: Any, is_sqlite: bool) -> dict[str, int]:
    names = [t.name for t in LEDGER_TABLES]
    if is_sqlite:
        sql = (
            "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat AS d "
            "JOIN sqlite_master AS m ON m.name = d.name GROUP BY m.tbl_name"
        )
        try:
            result = await conn.exec_driver_sql(sql)
        except Exception:  # no dbstat in this SQLite build: sizes unknown
            return {}
        return {name: int(size) for name, size in result if name in names}
    sizes = select(*(func.pg_total_relation_size(func.to_regclass(n)) for n in names))
    row = (await conn.execute(sizes)).one()
    return {name: int(size) for name, size in zip(names, row, strict=True) if size is not None}


def _pick(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key)
    return default if value is None else float(value)


def _rules(policy: RetentionPolicy, now: datetime, scope: Any) -> list[Any]:
    """The conditions under which ``policy`` deletes a run of ``scope`` (a workflow
    condition): one per rule that is on."""
    rules = []
    for statuses, days in ((_ENDED_OK, policy.days), (("Failed",), policy.failed_days)):
        if days:
            cutoff = now - timedelta(days=days)
            # created_at narrows by the (status, created_at) index; ended_at decides
            rules.append(
                and_(
                    scope,
                    _runs.status.in_(statuses),
                    _runs.created_at < cutoff,
                    _runs.ended_at < cutoff,
                )
            )
    if policy.max_runs:
        newest_first = (_runs.created_at.desc(), _runs.id.desc())
        ranked = (
            select(
                _runs.id,
                func.row_number()
                .over(partition_by=_runs.workflow_id, order_by=newest_first)
                .label("rank"),
            )
            .where(scope, _runs.status.in_(_FINAL))
            .subquery()
        )
        over = select(ranked.c.id).where(ranked.c.rank > policy.max_runs)
        rules.append(and_(scope, _runs.status.in_(_FINAL), _runs.id.in_(over)))
    return rules


async def table_sizes(db: Database) -> list[TableSize]:
    """Each ledger table's rows and bytes, cheap at any size (:class:`TableSize`)."""

    async def query(conn: Any) -> list[TableSize]:
        sizes = await _table_bytes(conn, db.is_sqlite)
        if db.is_sqlite:
            rows: dict[str, int] = await _exact_rows(conn)
        else:
            estimates = await conn.execute(
                text("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:names)"),
                {"names": [t.name for t in LEDGER_TABLES]},
            )
            rows = {name: int(n) for name, n in estimates if n is not None and n >= 0}
        return [TableSize(t.name, rows.get(t.name), sizes.get(t.name)) for t in LEDGER_TABLES]

    return await db.read(query, "ledger table sizes")
