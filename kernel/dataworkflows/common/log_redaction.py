"""Keeping secret values out of the logs: a log-record factory, installed once per process
by :func:`install_log_redaction`, replaces every secret a live
:class:`~dataworkflows.common.redaction.Redactor` knows in every log message and formatted
traceback, whichever logger, thread or handler the record goes to. Logging is
process-wide, so the factory applies the secrets of every *live* redactor (kernels register
theirs; the registry holds weak references, so a closed and collected kernel drops out by
itself), and always those of the process-wide fallback.
"""

from __future__ import annotations

import logging
import threading
import traceback
import weakref
from typing import Any

from dataworkflows.common.redaction import Redactor, redact_text_with, redactor

# reentrant: a weakref callback (_forget) can run inside install_log_redaction when an
# allocation there triggers a garbage collection in the same thread
_registry_lock = threading.RLock()
_live: tuple[weakref.ref[Redactor], ...] = (weakref.ref(redactor),)
_installed = False


def live_redactors() -> list[Redactor]:
    """The redactors whose secrets the log-record factory removes (alive, registered)."""
    return [r for ref in _live if (r := ref()) is not None]


def _forget(ref: weakref.ref[Redactor]) -> None:
    global _live
    with _registry_lock:
        _live = tuple(r for r in _live if r is not ref)


def install_log_redaction(owner: Redactor | None = None) -> None:
    """Make every log record redacted; register ``owner``'s secrets for it too.

    The record factory is installed once per process; each call may add a redactor (a
    kernel's) to the registry, which keeps only a weak reference to it.
    """
    global _installed, _live
    with _registry_lock:
        if owner is not None and all(ref() is not owner for ref in _live):
            _live = (*_live, weakref.ref(owner, _forget))
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            active = [r for r in live_redactors() if r.active]
            if active:
                _redact_record(record, active)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def _redact_record(record: logging.LogRecord, redactors: list[Redactor]) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to logging to report
        return
    cleaned = redact_text_with(redactors, message)
    if cleaned != message:
        record.msg = cleaned
        record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        cleaned = redact_text_with(redactors, text)
        if cleaned != text:
            record.exc_text = cleaned
            record.exc_info = None
    if record.stack_info:
        record.stack_info = redact_text_with(redactors, record.stack_info)
