"""Engine measurements: what the kernel tells ``on_engine_measurement`` observers about its
own machinery (claims, group commit, fencing, dead letters, trigger intake), and what
:meth:`PluginAPI.queue_depth <dataworkflows.plugin_api.PluginAPI.queue_depth>` reads.

Run and step changes reach plugins as :class:`~dataworkflows.events.RunEvent` through
``on_run_event``; these are the figures no event carries. They are cheap to produce: no
database write, and one measurement per batch (a claim transaction, a group commit), not
one per row.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Measure(enum.StrEnum):
    """What an :class:`EngineMeasurement` measures (its ``values`` and ``labels``)."""

    #: seconds each run of one claim transaction waited in the queue (enqueued → claimed);
    #: runs a worker takes in their own enqueue transaction wait 0 and are not measured.
    #: Labels: none.
    CLAIM_LATENCY = "claim.latency"
    #: items written by one group-commit transaction (one value). Labels: ``writer``
    #: (``ledger-enqueue``: run enqueues, ``ledger-flush``: step writes)
    GROUP_COMMIT_BATCH = "group_commit.batch"
    #: writes or lease renewals refused because the claim's fencing token is no longer
    #: current (the run was taken over or is already final); one value, the count.
    #: Labels: ``stage`` (``write`` or ``renewal``)
    FENCING_REJECTED = "fencing.rejected"
    #: runs moved to the dead letters (recovered too often); one value, the count.
    #: Labels: ``workflow_id``
    DEAD_LETTERED = "dead_letter"
    #: seconds the kernel took to take one event of a trigger plugin (``fire_trigger``:
    #: activation condition, dedup, durable enqueue) — what a webhook sender waits for
    #: beyond reading and verifying its request. One value. Labels: ``trigger_type``,
    #: ``outcome`` (``started``, ``duplicate``, ``notActivated``, ``conditionError``,
    #: ``error``)
    TRIGGER_FIRED = "trigger.fired"


@dataclass(frozen=True)
class EngineMeasurement:
    """One observation of the kernel's machinery, as ``on_engine_measurement`` receives it.

    ``values`` holds one number per observed item of a batch (e.g. the queue wait of each
    run one claim took), so that a batch costs one hook call; ``labels`` are small, bounded
    strings (see :class:`Measure` for each name's).
    """

    name: Measure
    values: tuple[float, ...]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueDepth:
    """The run queue, read at once (e.g. when ``/metrics`` is scraped)."""

    #: runs waiting for a worker (``Pending``)
    pending: int
    #: runs held by a worker (``Running``)
    running: int
    #: seconds the oldest ``Pending`` run has waited (None when none waits)
    oldest_pending_seconds: float | None


@dataclass(frozen=True)
class TableSize:
    """One ledger table's size, read at once (e.g. when ``/metrics`` is scraped).

    On PostgreSQL ``rows`` is the planner's estimate (``pg_class.reltuples``, kept by
    autovacuum/``ANALYZE``; None before the first), so that reading it costs nothing at
    any size; on SQLite it is exact. ``bytes`` is the table with its indexes on disk
    (None where the database cannot tell).
    """

    table: str
    rows: int | None
    bytes: int | None
