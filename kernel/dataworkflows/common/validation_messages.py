"""Validation errors in the user's terms.

pydantic's messages are written for Python programmers ("Value error, ...", "Extra inputs
are not permitted", "Field required"). :func:`friendly_errors` turns each error of a
:class:`~pydantic.ValidationError` into ``(loc, message, type)`` that a workflow author
understands; an unknown field names the closest known one ("did you mean 'retry'?"),
found by walking the model along the error's location.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

_PREFIXES = ("Value error, ", "Assertion failed, ")


def json_path(loc: tuple[Any, ...], root: str = "$") -> str:
    """A validation error's location as a JSON path: ``("a", 0, "b")`` → ``$.a[0].b``."""
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def friendly_errors(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> Iterator[tuple[tuple[Any, ...], str, str]]:
    """``(loc, message, type)`` for every error of ``exc`` (``model``: what was validated,
    for suggestions of known field names)."""
    for err in exc.errors():
        loc = tuple(err["loc"])
        yield loc, friendly_message(err, model), str(err["type"])


def friendly_message(err: Any, model: type[BaseModel] | None = None) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in plain words."""
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden" and loc:
        known = known_fields(model, loc[:-1]) if model is not None else []
        return unknown_field(str(loc[-1]), known)
    if kind == "missing":
        return "this field is required"
    message = str(err["msg"])
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message


def unknown_field(field: str, known: list[str]) -> str:
    """The message for a field that is not among ``known``, naming the closest one."""
    message = f"unknown field {field!r}"
    match = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
    if match:
        return f"{message}; did you mean {match[0]!r}?"
    if known:
        return f"{message} (known fields: {', '.join(sorted(known))})"
    return message


def known_fields(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The JSON names of the fields of the model found at ``loc`` under ``model``."""
    current = _model_at(model, loc)
    if current is None:
        return []
    return [info.alias or name for name, info in current.model_fields.items()]


def _model_at(annotation: Any, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    model = _as_model(annotation)
    return model


def _step(annotation: Any, part: Any) -> Any:
    """The annotation one location step below ``annotation``."""
    model = _as_model(annotation)
    if model is not None and isinstance(part, str):
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    for candidate in _alternatives(annotation):
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if isinstance(part, int) and origin in (list, tuple, set, frozenset) and args:
            return args[0]
        if isinstance(part, str) and origin is dict and len(args) == 2:
            return args[1]
    return None


def _alternatives(annotation: Any) -> list[Any]:
    """``X | Y | None`` → ``[X, Y]``; anything else → ``[annotation]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in _alternatives(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
