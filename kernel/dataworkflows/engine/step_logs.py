"""Per-step logs: what an action writes to ``ctx.log``, kept with its attempt's row.

``ctx.log`` is a :class:`StepLog`: a :class:`logging.LoggerAdapter` that logs as before
(to ``dataworkflows.action.<type>``, with the run's context) and also keeps every line at
``INFO`` or above — whatever the process's log level — as ``{time, level, message}``. The
lines travel in the attempt's :class:`~dataworkflows.ledger.run_ledger.StepRecord` and are
stored in its own write (``action_executions.logs``): no extra transaction. The ledger
redacts secrets from them like from every other value it writes.

Bounded: at most ``DATAWORKFLOWS_STEP_LOG_MAX_BYTES`` (64 KiB) of messages per attempt and
``DATAWORKFLOWS_RUN_LOG_MAX_BYTES`` (1 MiB) per run (UTF-8 bytes of the messages). A line
that does not fit is dropped whole, and the attempt's last line then says how many lines
and bytes were dropped and which cap was reached. Never fatal: a message that cannot be
formatted (its ``str()`` raises) is kept as a note saying so, and characters no database
can store (NUL, lone surrogates) are replaced, so a log line can never fail a write.
"""

from __future__ import annotations

import logging
import traceback
from datetime import datetime
from typing import Any

from dataworkflows.common.clock import Clock, iso_utc

#: the lowest level kept (DEBUG lines go to the process log only)
KEPT_LEVEL = logging.INFO


class RunLogBudget:
    """The bytes of log lines a run may still keep (shared by its attempts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def restore(self, rows: list[dict[str, Any]] | None) -> None:
        """Count the lines already recorded (a resumed run)."""
        for line in rows or ():
            self.used += len(str(line.get("message", "")).encode())


class StepLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.log`` of one attempt: logs, and keeps its lines for the attempt's row."""

    def __init__(
        self,
        logger: logging.Logger,
        extra: dict[str, Any],
        *,
        clock: Clock,
        max_bytes: int,
        run_budget: RunLogBudget,
    ) -> None:
        super().__init__(logger, extra)
        self._clock = clock
        self._max_bytes = max_bytes
        self._run = run_budget
        self._lines: list[dict[str, Any]] = []
        self._used = 0
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._cap = ""

    @classmethod
    def of(
        cls,
        action_type: str,
        node_id: str,
        attempt: int,
        clock: Clock,
        max_bytes: int,
        run_budget: RunLogBudget,
    ) -> StepLog:
        """``ctx.log`` of one attempt of ``node_id``, logging to ``dataworkflows.action.<type>``.

        The execution id reaches log records through logcontext (bound by the conductor);
        passing it as ``extra`` too would collide with its record factory.
        """
        return cls(
            logging.getLogger(f"dataworkflows.action.{action_type}"),
            {"node_id": node_id, "attempt": attempt},
            clock=clock,
            max_bytes=max_bytes,
            run_budget=run_budget,
        )

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level >= KEPT_LEVEL:
            try:
                self._keep(level, msg, args, kwargs.get("exc_info"))
            except Exception:  # keeping a line must never break the action
                logging.getLogger(__name__).exception("a step log line was not kept")
        super().log(level, msg, *args, **kwargs)

    def _keep(self, level: int, msg: Any, args: tuple[Any, ...], exc_info: Any) -> None:
        text = _message(msg, args)
        if exc_info:
            text += "\n" + _traceback(exc_info)
        text = storable(text)
        size = len(text.encode())
        if self._used + size > self._max_bytes:
            self._drop(size, f"{self._max_bytes} bytes per attempt")
            return
        if self._run.used + size > self._run.limit:
            self._drop(size, f"{self._run.limit} bytes per run")
            return
        self._used += size
        self._run.used += size
        self._lines.append(_line(self._clock.now(), logging.getLevelName(level), text))

    def _drop(self, size: int, cap: str) -> None:
        self._dropped_lines += 1
        self._dropped_bytes += size
        self._cap = self._cap or cap

    def lines(self) -> list[dict[str, Any]] | None:
        """The attempt's kept lines, plus the truncation line if some were dropped."""
        lines = list(self._lines)
        if self._dropped_lines:
            lines.append(
                _line(
                    self._clock.now(),
                    "WARNING",
                    f"[dataworkflows] {self._dropped_lines} log line(s) "
                    f"({self._dropped_bytes} bytes) dropped: over the cap of {self._cap} "
                    "(DATAWORKFLOWS_STEP_LOG_MAX_BYTES / DATAWORKFLOWS_RUN_LOG_MAX_BYTES)",
                )
            )
        return lines or None


def _line(time: datetime, level: str, message: str) -> dict[str, Any]:
    return {"time": iso_utc(time), "level": level, "message": message}


def _message(msg: Any, args: tuple[Any, ...]) -> str:
    try:
        text = str(msg)
        return text % args if args else text
    except Exception as exc:
        return f"<the log message could not be formatted: {type(exc).__name__}>"


def _traceback(exc_info: Any) -> str:
    try:
        if exc_info is True:
            return traceback.format_exc().rstrip()
        if isinstance(exc_info, BaseException):
            return "".join(traceback.format_exception(exc_info)).rstrip()
        return "".join(traceback.format_exception(*exc_info)).rstrip()
    except Exception:
        return "<the traceback could not be formatted>"


def storable(text: str) -> str:
    """``text`` without what no database stores in a JSON string: NUL (PostgreSQL refuses
    ``\\u0000``) and lone surrogates (not UTF-8) become U+FFFD."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text
