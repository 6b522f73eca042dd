"""Parsing JSON from strangers with bounded work: depth and number length checked first.

``json.loads`` recurses once per nesting level and turns a number of any length into an
``int`` (or an infinite ``float``). A request body of a megabyte can be half a million
``[`` deep or one number of a million digits; everything that walks the parsed value
later (validation, rendering, the database's JSON encoder) pays again. So the API and the
webhook plugin parse bodies with :func:`loads_limited`, which looks at the raw text first,
in C-speed passes (no per-character Python loop):

1. strings are cut out (a bracket or digit inside a string is data);
2. the deepest nesting of ``[``/``{`` is a running sum over the brackets (a body with
   fewer brackets than twice the limit skips it);
3. a run of number characters longer than ``max_number_length`` is refused.

Then ``NaN``/``Infinity`` (not JSON) and numbers too large for a float are refused while
parsing. Every refusal is a :class:`JSONLimitError` (a ``ValueError``) saying which limit.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from typing import Any

#: defaults of ``DATAWORKFLOWS_JSON_MAX_DEPTH`` and ``DATAWORKFLOWS_JSON_MAX_NUMBER_LENGTH``
MAX_DEPTH = 64
MAX_NUMBER_LENGTH = 100

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OTHER = bytes(b for b in range(256) if b not in b"[]{}")
_WEIGHTS = bytes.maketrans(b"[{]}", b"\x03\x03\x01\x01")


class JSONLimitError(ValueError):
    """The JSON text goes over a limit; ``limit`` is ``depth`` or ``numberLength``."""

    def __init__(self, message: str, limit: str, maximum: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum


def check_limits(
    raw: bytes | str,
    *,
    max_depth: int = MAX_DEPTH,
    max_number_length: int = MAX_NUMBER_LENGTH,
) -> None:
    """Raise :class:`JSONLimitError` if ``raw`` nests deeper than ``max_depth`` or has a
    number longer than ``max_number_length`` characters; says nothing about validity."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if not data:
        return
    outside = _STRING.sub(b'""', data) if b'"' in data else data
    brackets = outside.translate(None, _OTHER)
    if len(brackets) > 2 * max_depth and _deeper_than(brackets, max_depth):
        raise JSONLimitError(
            f"the JSON is nested more than {max_depth} levels deep", "depth", max_depth
        )
    number = re.search(rb"[-+0-9.eE]{%d,}" % (max_number_length + 1), outside)
    if number is not None:
        raise JSONLimitError(
            f"the JSON has a number of more than {max_number_length} characters",
            "numberLength",
            max_number_length,
        )


def loads_limited(
    raw: bytes | str,
    *,
    max_depth: int = MAX_DEPTH,
    max_number_length: int = MAX_NUMBER_LENGTH,
) -> Any:
    """``json.loads`` after :func:`check_limits`; also refuses ``NaN``, ``Infinity`` and
    floats out of range. Raises ``ValueError`` (:class:`JSONLimitError` for a limit)."""
    check_limits(raw, max_depth=max_depth, max_number_length=max_number_length)
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)


def _deeper_than(brackets: bytes, depth: int) -> bool:
    """True if the bracket skeleton nests deeper than ``depth`` at any point.

    With ``[``/``{`` as 3 and ``]``/``}`` as 1, the running sum after ``i + 1`` brackets
    minus ``2 * (i + 1)`` is the depth there; every step of it runs in C.
    """
    depths = map(
        operator.sub, itertools.accumulate(brackets.translate(_WEIGHTS)), itertools.count(2, 2)
    )
    while True:  # in chunks: a nesting bomb is found in its first few thousand brackets
        deepest = max(itertools.islice(depths, 4096), default=None)
        if deepest is None:
            return False
        if deepest > depth:
            return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}... is too large")
    return value
