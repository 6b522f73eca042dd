"""What a log line is about: the correlation id, run, node, attempt, tenant and principal
of the current task.

The API's correlation middleware binds the request's ``Correlation-Id``; the worker binds
the run's stored ``correlation_id``, its execution id, tenant and principal while it
executes the run, and the engine binds the node and attempt around each attempt. They are
context variables, so tasks started inside inherit them. :func:`install` makes every
``logging.LogRecord`` carry them: ``record.correlation_id`` and ``record.execution_id``
(``"-"`` when unbound), so a format string may always use them, and ``record.dw_node_id``,
``record.dw_attempt``, ``record.dw_tenant``, ``record.dw_principal`` (None when unbound;
prefixed because ``ctx.log`` passes ``node_id`` and ``attempt`` as its ``extra``).
:func:`record_ids` gives all six as the structured log formatter writes them
(:mod:`dataworkflows.common.logformat`)::

    logcontext.install()
    logging.basicConfig(format=logcontext.LOG_FORMAT)

    with logcontext.bind(correlation_id=run.correlation_id, execution_id=run.id_str):
        await conductor.execute(run)

Once installed, do not pass ``correlation_id`` or ``execution_id`` in a log call's
``extra`` (or a ``LoggerAdapter``'s): the record already has them, and ``logging`` refuses
to overwrite a record attribute (``KeyError``). Bind them instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: the correlation id of the request or run this task works for
correlation_id_var: ContextVar[str | None] = ContextVar("dw_correlation_id", default=None)
#: the execution this task runs (worker side)
execution_id_var: ContextVar[str | None] = ContextVar("dw_execution_id", default=None)
#: the node and attempt this task runs (bound by the engine around each attempt)
node_id_var: ContextVar[str | None] = ContextVar("dw_node_id", default=None)
attempt_var: ContextVar[int | None] = ContextVar("dw_attempt", default=None)
#: who the run belongs to and who started it
tenant_var: ContextVar[str | None] = ContextVar("dw_tenant", default=None)
principal_var: ContextVar[str | None] = ContextVar("dw_principal", default=None)

#: A format that shows both ids; usable once :func:`install` ran.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [cid=%(correlation_id)s run=%(execution_id)s]: %(message)s"
)


def current_correlation_id() -> str | None:
    """The correlation id bound in this task, or None."""
    return correlation_id_var.get()


@contextmanager
def bind(
    *,
    correlation_id: str | None = None,
    execution_id: str | None = None,
    node_id: str | None = None,
    attempt: int | None = None,
    tenant_id: str | None = None,
    principal: str | None = None,
) -> Iterator[None]:
    """Bind ids for the duration of the block (only the ones given; others keep theirs)."""
    tokens: list[tuple[ContextVar[Any], Any]] = []
    for var, value in (
        (correlation_id_var, correlation_id),
        (execution_id_var, execution_id),
        (node_id_var, node_id),
        (attempt_var, attempt),
        (tenant_var, tenant_id),
        (principal_var, principal),
    ):
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _stamp(record: logging.LogRecord) -> None:
    if not hasattr(record, "correlation_id"):
        record.correlation_id = correlation_id_var.get() or "-"
    if not hasattr(record, "execution_id"):
        record.execution_id = execution_id_var.get() or "-"
    record.dw_node_id = node_id_var.get()
    record.dw_attempt = attempt_var.get()
    record.dw_tenant = tenant_var.get()
    record.dw_principal = principal_var.get()


def record_ids(record: logging.LogRecord) -> dict[str, Any]:
    """The ids a record was logged under (None when unbound), for structured output.

    A record made before :func:`install` (or by another factory) falls back to the ids
    bound in the current context; ``node_id``/``attempt`` given as ``extra`` (``ctx.log``)
    win over the bound ones.
    """

    def stamped(name: str, var: ContextVar[Any]) -> Any:
        if not hasattr(record, name):
            return var.get()
        value = getattr(record, name)
        return None if value == "-" else value

    return {
        "executionId": stamped("execution_id", execution_id_var),
        "nodeId": getattr(record, "node_id", None) or stamped("dw_node_id", node_id_var),
        "attempt": getattr(record, "attempt", None) or stamped("dw_attempt", attempt_var),
        "correlationId": stamped("correlation_id", correlation_id_var),
        "tenant": stamped("dw_tenant", tenant_var),
        "principal": stamped("dw_principal", principal_var),
    }


_installed = False


def install() -> None:
    """Make every log record carry the bound ids (idempotent; wraps the record factory)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _stamp(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
