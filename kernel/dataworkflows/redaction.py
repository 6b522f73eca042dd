"""Keeping secret values out of the ledger, events, API responses and logs.

Every secret the kernel hands to an action (``ctx.credentials.get(...)``) is registered with
the process-wide :data:`redactor`. From then on:

* the run ledger replaces it in step parameters, outputs and errors before writing them
  (so events, ``on_run_event`` observers and API responses, which are read from those rows,
  never see it either);
* a log-record factory installed by :func:`install_log_redaction` replaces it in every log
  message and formatted traceback, whichever logger or handler the record goes to.

A secret is recognised in the forms it most often leaks in: as is, URL-encoded (``%2F``
and ``+`` styles, upper- and lower-case hex), JSON-escaped and base64-encoded (standard and
URL-safe alphabets, at any byte alignment, so ``Basic base64(user:secret)`` is caught too).

The redactor is process-wide on purpose: a secret is a secret whichever kernel or run
fetched it, and logging is process-wide anyway. Values shorter than
:data:`MIN_SECRET_LENGTH` characters are not registered: they cannot be told apart from
ordinary text.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4
_MIN_FRAGMENT = 4


def secret_forms(secret: str) -> set[str]:
    """Every encoded form of ``secret`` the redactor looks for (including itself)."""
    forms = {secret}
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded))
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    raw = secret.encode()
    whole = base64.b64encode(raw).decode()
    forms |= {whole, whole.replace("+", "-").replace("/", "_")}
    for shift in range(3):
        encoded_std = base64.b64encode(b"\0" * shift + raw).decode().rstrip("=")
        # Characters that only depend on the secret's bytes, whatever surrounds it.
        start = -(-8 * shift // 6)
        end = (8 * (shift + len(raw))) // 6
        fragment = encoded_std[start:end]
        if len(fragment) >= _MIN_FRAGMENT:
            forms.add(fragment)
            forms.add(fragment.replace("+", "-").replace("/", "_"))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """A set of secret values and the replacement of their forms in text and JSON."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True once at least one secret is registered."""
        return self._pattern is not None

    def add(self, secret: str | None) -> None:
        """Register a secret (no-op for None, already known or too short values)."""
        if not secret or len(secret) < MIN_SECRET_LENGTH or secret in self._secrets:
            return
        with self._lock:
            if secret in self._secrets:
                return
            self._secrets.add(secret)
            forms: set[str] = set()
            for known in self._secrets:
                forms |= secret_forms(known)
            ordered = sorted(forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered))

    def add_all(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            self.add(secret)

    def redact_text(self, text: str) -> str:
        """``text`` with every known secret form replaced by ``[REDACTED]``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)

    def contains_secret(self, text: str) -> bool:
        pattern = self._pattern
        return bool(pattern is not None and text and pattern.search(text))

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings) with secrets replaced."""
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {
                (self.redact_text(k) if isinstance(k, str) else k): self._walk(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value


#: The process-wide redactor (see the module docstring for why it is global).
redactor = Redactor()

_install_lock = threading.Lock()
_installed = False


def install_log_redaction() -> None:
    """Wrap the logging record factory so every record is redacted (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if redactor.active:
                _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to logging to report
        return
    cleaned = redactor.redact_text(message)
    if cleaned != message:
        record.msg = cleaned
        record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if redactor.contains_secret(text):
            record.exc_text = redactor.redact_text(text)
            record.exc_info = None
    if record.stack_info and redactor.contains_secret(record.stack_info):
        record.stack_info = redactor.redact_text(record.stack_info)
