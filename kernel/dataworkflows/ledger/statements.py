"""The ledger's hot-path statements, built once per database and reused.

Building a SQLAlchemy Core statement and computing its cache key costs more than sending
it (about 0.3 ms for the claim UPDATE here); a statement object that is reused keeps its
cache key and its compiled form. Values travel as bound parameters (``p_*``), so each
statement below is one compiled SQL string for the life of the process.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, tuple_, update

from dataworkflows.db.models import (
    action_executions,
    execution_events,
    run_variables,
    workflow_executions,
    workflows,
)
from dataworkflows.ledger.fairness import TenantCaps

_t = workflow_executions

#: a run a worker may take: new, or running under a lease that has expired
_CLAIMABLE = or_(
    _t.c.status == "Pending",
    and_(
        _t.c.status == "Running",
        _t.c.lease_expires_at < bindparam("p_now", type_=_t.c.lease_expires_at.type),
    ),
)

#: the columns a claim returns (see RunLedger._claim_batch)
CLAIM_COLUMNS = (
    _t.c.id,
    _t.c.workflow_id,
    _t.c.workflow_version,
    _t.c.trigger,
    _t.c.tenant_id,
    _t.c.principal,
    _t.c.correlation_id,
    _t.c.started_at,
    _t.c.created_at,
    _t.c.fencing_token,
    _t.c.recovery_count,
    _t.c.cancel_requested,
    _t.c.trace_context,
    _t.c.parent_execution_id,
    _t.c.root_execution_id,
    _t.c.depth,
    _t.c.wakes_parent,
)

INSERT_EVENTS = execution_events.insert()
INSERT_ACTIONS = action_executions.insert()
#: ``Running`` rows replaced by their attempt's next row (``p_ids``) of the runs
#: ``p_runs`` (which name the partitions to look in when the ledger is partitioned)
DELETE_ACTIONS = action_executions.delete().where(
    action_executions.c.execution_id.in_(bindparam("p_runs", expanding=True)),
    action_executions.c.id.in_(bindparam("p_ids", expanding=True)),
)

#: the published versions of a batch's workflows (``p_ids``: their ids)
PUBLISHED_WORKFLOWS = select(
    workflows.c.id, workflows.c.tenant_id, workflows.c.status, workflows.c.current_version
).where(workflows.c.id.in_(bindparam("p_ids", expanding=True)))

_HELD = and_(
    tuple_(_t.c.id, _t.c.fencing_token).in_(bindparam("p_claims", expanding=True)),
    _t.c.status == "Running",
)

#: extend the leases of the runs still held under the given claims (``p_claims``: pairs of
#: execution id and fencing token); returns their ids
FENCE_ONGOING = (
    update(_t)
    .where(_HELD)
    .values(lease_expires_at=bindparam("p_lease_until", type_=_t.c.lease_expires_at.type))
    .returning(_t.c.id)
)

#: end the runs still held under the given claims (``p_status``, ``p_error``, ``p_now``)
FENCE_FINISH = (
    update(_t)
    .where(_HELD)
    .values(
        status=bindparam("p_status", type_=_t.c.status.type),
        error=bindparam("p_error", type_=_t.c.error.type),
        ended_at=bindparam("p_now", type_=_t.c.ended_at.type),
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(_t.c.id)
)


#: the end of waited-on children wakes their parents (``p_ids``): a parked (``Waiting``)
#: parent becomes ``Pending`` again; every parent counts the wake-up, which a parent that is
#: about to park compares (dataworkflows.ledger.children)
WAKE_PARENTS = (
    update(_t)
    .where(_t.c.id.in_(bindparam("p_ids", expanding=True)))
    .values(
        child_wakeups=_t.c.child_wakeups + 1,
        status=case((_t.c.status == "Waiting", "Pending"), else_=_t.c.status),
    )
)


#: how many of each tenant's oldest claimable runs a claim considers, as a multiple of its
#: limit: room for that many workers claiming at the same instant to pass over each
#: other's locked rows (PostgreSQL) without coming back empty
CLAIM_WINDOW_FACTOR = 4


def claim_statement(*, skip_locked: bool, caps: TenantCaps | None = None) -> Any:
    """UPDATE … RETURNING that takes up to ``p_limit`` claimable runs, fairly across tenants.

    Fair claiming (docs/limits.md): each tenant's claimable runs are numbered oldest first
    (``row_number() OVER (PARTITION BY tenant_id ORDER BY created_at)``), the number is
    moved on by the tenant's runs already ``Running`` under a live lease (its *place*), and
    the claim takes the lowest places first, the older run on a tie. A tenant with nothing
    running gets its next run claimed before the second run of a tenant with one running,
    and so on: however large one tenant's backlog, another tenant's run waits at most for
    the claims that serve the tenants with fewer runs running than its own. Only each
    tenant's ``p_limit * CLAIM_WINDOW_FACTOR`` oldest claimable runs are candidates; the
    partial index ``ix_workflow_executions__claim_order`` (tenant, created_at of Pending
    and Running rows) feeds the window in order, without a sort.

    ``caps`` (per-tenant concurrency caps): a run is a candidate only while its place stays
    within its tenant's cap.

    Parameters: ``p_now``, ``p_owner``, ``p_lease_until``, ``p_limit``. ``skip_locked``
    (PostgreSQL): concurrent claimers pass over each other's rows instead of waiting.
    """
    limit = bindparam("p_limit", type_=_t.c.fencing_token.type)
    rank = (
        func.row_number()
        .over(partition_by=_t.c.tenant_id, order_by=(_t.c.created_at, _t.c.id))
        .label("rank")
    )
    ranked = select(_t.c.id, _t.c.tenant_id, _t.c.created_at, rank).where(_CLAIMABLE).subquery()
    running = (
        select(_t.c.tenant_id, func.count().label("running"))
        .where(
            _t.c.status == "Running",
            _t.c.lease_expires_at >= bindparam("p_now", type_=_t.c.lease_expires_at.type),
        )
        .group_by(_t.c.tenant_id)
        .subquery()
    )
    source: Any = ranked.outerjoin(running, running.c.tenant_id == ranked.c.tenant_id)
    #: the place the run would take among its tenant's runs if it started now
    place = ranked.c.rank + func.coalesce(running.c.running, 0)
    eligible = [ranked.c.rank <= limit * CLAIM_WINDOW_FACTOR]
    if caps is not None:
        eligible.append(place <= caps.expression(ranked.c.tenant_id))
    fair = select(ranked.c.id, place.label("place"), ranked.c.created_at).select_from(source)
    fair = fair.where(*eligible).order_by(place, ranked.c.created_at)
    if skip_locked:
        # PostgreSQL: FOR UPDATE cannot sit beside a window function, so the best
        # candidates (a few per claimer that may run at once) are joined back to the table
        # and locked in fair order, passing over rows other claimers hold (SKIP LOCKED).
        # The pick must run once: as ``id IN (subquery)`` the planner may run it again for
        # later rows, and each run, skipping the rows this statement has just made
        # Running, picks the next ones: one claim would take every claimable run whatever
        # its limit. A materialized CTE is evaluated exactly once.
        candidates = fair.limit(limit * CLAIM_WINDOW_FACTOR).subquery("candidates")
        picked = (
            select(_t.c.id)
            .select_from(candidates.join(_t, _t.c.id == candidates.c.id))
            .where(_CLAIMABLE)
            .order_by(candidates.c.place, candidates.c.created_at)
            .limit(limit)
            .with_for_update(of=_t, skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        chosen = _t.c.id == picked.c.id
    else:  # SQLite: one writer at a time
        chosen = _t.c.id.in_(select(fair.limit(limit).subquery().c.id).scalar_subquery())
    expired = and_(_t.c.status == "Running", _t.c.lease_owner.is_not(None))
    return (
        update(_t)
        .where(chosen, _CLAIMABLE)
        .values(
            status="Running",
            started_at=func.coalesce(
                _t.c.started_at, bindparam("p_now", type_=_t.c.started_at.type)
            ),
            lease_owner=bindparam("p_owner", type_=_t.c.lease_owner.type),
            lease_expires_at=bindparam("p_lease_until", type_=_t.c.lease_expires_at.type),
            fencing_token=_t.c.fencing_token + 1,
            recovery_count=_t.c.recovery_count + case((expired, 1), else_=0),
        )
        .returning(*CLAIM_COLUMNS)
    )


def enqueue_statement(db: Any) -> Any:
    """INSERT of new runs that skips a (workflow, request id) already taken; returns ids.

    No conflict target: the unique (workflow, request id) index is the arbiter on a plain
    table; on a partitioned one (which cannot have it) a trigger skips the row instead,
    through the ``execution_requests`` table (docs/partitioning.md)."""
    return db.insert(_t).on_conflict_do_nothing().returning(_t.c.id)


def upsert_variables_statement(db: Any) -> Any:
    """INSERT of ``run_variables`` rows that overwrites the value of a key already set."""
    insert = db.insert(run_variables)
    return insert.on_conflict_do_update(
        index_elements=["execution_id", "key"],
        set_={
            name: insert.excluded[name]
            for name in ("type", "value", "node_id", "attempt", "updated_at")
        },
    )
