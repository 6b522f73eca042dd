"""Run variables: typed values an action sets for the rest of its run (``vars.<key>``).

An action calls ``ctx.set_variable(key, value)``; the value is checked at once (key shape,
type, JSON, size) and kept with the attempt. When the attempt *succeeds*, its variables
are written with its own step row — in the same transaction, no extra write — upserted
by key (``run_variables``); later nodes of the run read them in templates as
``{{ vars.<key> }}`` and ``GET /api/v1/executions/{id}/variables`` lists them. The writes
of an attempt that fails, is retried or is cancelled are dropped, like its outputs.

Types: ``string``, ``number`` (int or finite float), ``boolean`` and ``json`` (an object,
an array or null). The value is stored as JSON, so a number reads back as a number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

#: a key: an identifier, so that ``vars.<key>`` works in templates
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: UTF-8 bytes of one value's JSON, unless the kernel sets another cap
DEFAULT_MAX_BYTES = 16 * 1024
#: distinct keys one attempt may set
MAX_KEYS_PER_ATTEMPT = 100
TYPES = ("string", "number", "boolean", "json")


class VariableError(ValueError):
    """A variable that cannot be set: bad key, unsupported type, not JSON, too big."""

    code = "invalid_variable"


def type_of(value: Any) -> str:
    """The stored type of ``value``: ``string``, ``number``, ``boolean`` or ``json``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None or isinstance(value, dict | list):
        return "json"
    raise VariableError(
        f"a run variable is a string, number, boolean or JSON object/array/null, "
        f"not {type(value).__name__}"
    )


def check_variable(key: Any, value: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Raise :class:`VariableError` unless ``key`` and ``value`` may be stored; returns
    the value as it will be read back (tuples become lists)."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise VariableError(
            f"invalid variable key {key!r}: 1-64 letters, digits or '_', not starting with a digit"
        )
    if isinstance(value, tuple):
        value = list(value)
    type_of(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise VariableError(f"variable {key!r}: {value} is not a JSON number")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise VariableError(f"variable {key!r} is not storable as JSON ({exc})") from None
    if "\\u0000" in text:
        raise VariableError(f"variable {key!r} contains a NUL character (not storable)")
    size = len(text.encode())
    if size > max_bytes:
        raise VariableError(
            f"variable {key!r} is {size} bytes as JSON, over the cap of {max_bytes} "
            "(DATAWORKFLOWS_RUN_VARIABLE_MAX_BYTES)"
        )
    return json.loads(text)  # a copy: later changes to the caller's object do not leak


class RunVariables(Mapping[str, Any]):
    """``ctx.variables``: the run's variables as the attempt sees them (read-only mapping
    of those committed before it started, plus its own writes), and where it sets them
    (:meth:`set`, also ``ctx.set_variable``)."""

    def __init__(
        self, committed: Mapping[str, Any] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._committed = dict(committed or {})
        self._written: dict[str, Any] = {}
        self.max_bytes = max_bytes

    def set(self, key: str, value: Any) -> None:
        """Set (or overwrite) ``key``; raises :class:`VariableError` for a bad key or value."""
        value = check_variable(key, value, self.max_bytes)
        if key not in self._written and len(self._written) >= MAX_KEYS_PER_ATTEMPT:
            raise VariableError(f"an attempt may set at most {MAX_KEYS_PER_ATTEMPT} variables")
        self._written[key] = value

    def written(self) -> dict[str, Any] | None:
        """What this attempt set (None: nothing), in the order first set."""
        return dict(self._written) or None

    def __getitem__(self, key: str) -> Any:
        if key in self._written:
            return self._written[key]
        return self._committed[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._committed
        yield from (k for k in self._written if k not in self._committed)

    def __len__(self) -> int:
        return len(self._committed.keys() | self._written.keys())
