"""What a log line is about: the correlation id (and execution id) of the current task.

The API's correlation middleware binds the request's ``Correlation-Id``; the worker binds
the run's stored ``correlation_id`` and its execution id while it executes the run. Both
are context variables, so tasks started inside inherit them. :func:`install` makes every
``logging.LogRecord`` carry them as ``record.correlation_id`` and ``record.execution_id``
(``"-"`` when unbound), so a format string may always use them::

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

#: A format that shows both ids; usable once :func:`install` ran.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [cid=%(correlation_id)s run=%(execution_id)s]: %(message)s"
)


def current_correlation_id() -> str | None:
    """The correlation id bound in this task, or None."""
    return correlation_id_var.get()


@contextmanager
def bind(*, correlation_id: str | None = None, execution_id: str | None = None) -> Iterator[None]:
    """Bind ids for the duration of the block (only the ones given; others keep theirs)."""
    tokens: list[tuple[ContextVar[str | None], Any]] = []
    if correlation_id is not None:
        tokens.append((correlation_id_var, correlation_id_var.set(correlation_id)))
    if execution_id is not None:
        tokens.append((execution_id_var, execution_id_var.set(execution_id)))
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
