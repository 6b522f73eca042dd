"""Run variables in the ledger: the rows a step write upserts into ``run_variables``.

The variables an attempt set (``StepRecord.variables``, see
:mod:`dataworkflows.common.run_variables`) are written by
:meth:`~dataworkflows.ledger.run_ledger.RunLedger.record_steps` in the same transaction as
the attempt's row and events, upserted by (run, key), ``updated_at`` taken inside it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dataworkflows.common.run_variables import KEY, VariableError, type_of
from dataworkflows.ledger.records import ClaimedRun, StepRecord, UnwritableRecord


def check_variables(step: StepRecord) -> None:
    """Raise :class:`UnwritableRecord` unless every variable of ``step`` has a valid key and
    type (``ctx.set_variable`` checked them; a record built otherwise may not be), before
    the write joins a batch shared with other runs. Its JSON is checked by ``check_step``."""
    for key, value in (step.variables or {}).items():
        try:
            if not isinstance(key, str) or not KEY.fullmatch(key):
                raise VariableError(f"invalid variable key {key!r}")
            type_of(value)
        except VariableError as exc:
            raise UnwritableRecord(f"$.nodes.{step.node_id}.variables", str(exc)) from None


def variable_rows(run: ClaimedRun, steps: list[StepRecord], now: datetime) -> list[dict[str, Any]]:
    """``run_variables`` rows of the variables ``steps`` set; a key set twice keeps the
    last step's value (one row per key: an upsert may not touch a row twice)."""
    rows: dict[str, dict[str, Any]] = {}
    for step in steps:
        for key, value in (step.variables or {}).items():
            rows[key] = {
                "execution_id": run.id,
                "key": key,
                "type": type_of(value),
                "value": value,
                "node_id": step.node_id,
                "attempt": step.attempt,
                "updated_at": now,
            }
    return list(rows.values())
