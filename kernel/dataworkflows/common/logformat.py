"""The engine's own log output: JSON lines for machines, a console format for people.

``serve`` and ``worker`` call :func:`configure` with ``DATAWORKFLOWS_LOG_FORMAT``
(``auto``: ``console`` when stderr is a terminal, else ``json``) and
``DATAWORKFLOWS_LOG_LEVEL``. Both formats carry the ids of what the line is about
(:func:`dataworkflows.common.logcontext.record_ids`): a JSON line is one object::

    {"time": "2026-12-07T09:30:00.120Z", "level": "ERROR",
     "logger": "dataworkflows.engine.conductor", "message": "run ... failed at node ...",
     "executionId": "...", "nodeId": "charge", "attempt": 2, "correlationId": "...",
     "tenant": "acme", "principal": "alice", "errorCode": "http_error",
     "errorMessage": "..."}

``executionId`` … ``principal`` are on every line (null when unbound: a line not about a
run); ``errorCode`` / ``errorMessage`` on failure lines (``extra={"error_code": ...,
"error_message": ...}``); ``exception`` when there is a traceback.

Secrets: every string of the line is passed through the live redactors
(:mod:`dataworkflows.common.log_redaction`) before it is serialised, so a secret is removed
from the extra fields too, not only from the message the record factory already cleaned.

Standard library only: a JSON formatter is a few lines over ``logging.Formatter``;
python-json-logger would add a dependency for no feature used here.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from dataworkflows.common import logcontext
from dataworkflows.common.log_redaction import live_redactors
from dataworkflows.common.redaction import redact_text_with

#: extra record attributes a JSON line carries, by their JSON name
EXTRA_FIELDS = {"error_code": "errorCode", "error_message": "errorMessage"}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        redactors = [r for r in live_redactors() if r.active]
        return redact_text_with(redactors, value) if redactors else value
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the run's ids; secrets redacted in every field."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **logcontext.record_ids(record),
        }
        for attribute, name in EXTRA_FIELDS.items():
            value = getattr(record, attribute, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps({k: _clean(v) for k, v in line.items()}, default=str)


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger [cid=… run=… node=…#attempt]: message``, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(dw_where)s]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = logcontext.record_ids(record)
        where = f"cid={ids['correlationId'] or '-'} run={ids['executionId'] or '-'}"
        if ids["nodeId"]:
            where += f" node={ids['nodeId']}#{ids['attempt'] or '-'}"
        record.dw_where = where
        text = super().format(record)
        code = getattr(record, "error_code", None)
        return _clean(f"{text} [{code}]" if code and f"[{code}]" not in text else text)


def resolve(log_format: str, stream: IO[str]) -> str:
    """``json`` or ``console``: ``auto`` is ``console`` on a terminal, else ``json``."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    try:
        return "console" if isatty is not None and isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def formatter(log_format: str, stream: IO[str]) -> logging.Formatter:
    """The formatter for ``log_format`` (``auto`` resolved against ``stream``)."""
    return JsonFormatter() if resolve(log_format, stream) == "json" else ConsoleFormatter()


def configure(level: str, log_format: str = "auto", stream: IO[str] | None = None) -> None:
    """Send the process's log records to ``stream`` (stderr) in ``log_format``.

    Replaces the handler an earlier call installed; other handlers stay.
    """
    logcontext.install()
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, stream))
    handler.dw_engine_handler = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "dw_engine_handler", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
