"""What the engine logs about a run, and the ids every such line carries.

While a worker executes a run, the run's ids are bound (:func:`run_log_ids`, see
:mod:`dataworkflows.common.logcontext`): execution id, correlation id, tenant, principal;
the node runner binds the node and attempt around each attempt. Failures are logged with
the node, the error code and the message (``extra`` ``error_code`` / ``error_message``,
fields ``errorCode`` / ``errorMessage`` of a JSON line, :mod:`dataworkflows.common.logformat`):
one ``WARNING`` per failed attempt, one ``ERROR`` when the run fails.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dataworkflows.common import logcontext
from dataworkflows.ledger.records import ClaimedRun, StepRecord

log = logging.getLogger("dataworkflows.engine.run")


def run_log_ids(run: ClaimedRun) -> dict[str, Any]:
    """The :func:`logcontext.bind` arguments of a run."""
    return {
        "correlation_id": run.correlation_id,
        "execution_id": run.id_str,
        "tenant_id": run.tenant_id,
        "principal": run.principal,
    }


def _error_extra(error: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "error_code": str(error.get("code") or "failed"),
        "error_message": str(error.get("message") or ""),
    }


def log_attempt_failure(record: StepRecord) -> None:
    """A failed attempt (retried or final): its node, attempt, error code and message."""
    error = record.error or {}
    extra = _error_extra(error)
    log.warning(
        "node %s attempt %d ended %s: [%s] %s",
        record.node_id,
        record.attempt,
        record.status,
        extra["error_code"],
        extra["error_message"],
        extra=extra,
    )


def log_failure(run: ClaimedRun, failure: Mapping[str, Any]) -> None:
    """The run failed: which node (and attempt) caused it, the error code and message."""
    extra = _error_extra(failure)
    node_id = failure.get("nodeId")
    attempt = failure.get("attempt")
    with logcontext.bind(
        node_id=node_id if isinstance(node_id, str) else None,
        attempt=attempt if isinstance(attempt, int) and attempt > 0 else None,
    ):
        log.error(
            "run %s of %s failed at node %s: [%s] %s",
            run.id,
            run.workflow_id,
            node_id or "-",
            extra["error_code"],
            extra["error_message"],
            extra=extra,
        )
