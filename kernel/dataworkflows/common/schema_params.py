"""Action parameters declared with a plain JSON Schema dict instead of a pydantic model.

A plugin author who does not use pydantic writes ``Params = {"type": "object", ...}`` in
an :class:`~dataworkflows.actions.Action`. The action's class turns that dict into a
subclass of :class:`SchemaParams` (:func:`schema_params`), a pydantic model that the rest
of the kernel uses like any ``Params`` model:

* ``model_validate(data)`` checks ``data`` with `jsonschema <https://python-jsonschema
  .readthedocs.io>`_ (the schema's ``$schema`` dialect, Draft 2020-12 by default, with
  format checking) and raises a :class:`pydantic.ValidationError` with one error per
  problem, located by its path, so publishing a workflow with bad parameters is the same
  422 listing every problem with its JSON path as for a pydantic model. Messages never
  quote the rejected value (it may be a secret).
* ``model_json_schema()`` is the author's schema: ``GET /api/v1/plugins`` publishes it, and
  its ``"writeOnly": true`` properties are secret parameters, encrypted at rest and masked
  by the API (:mod:`dataworkflows.secrets.fields`).
* the instance ``run`` receives reads like a dict (``params["name"]``, ``params.get(...)``,
  ``params.to_dict()``) and, for names that are identifiers, like attributes
  (``params.name``).

``jsonschema`` is imported only when such a class is built, not for pydantic-only plugins.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from dataworkflows.common.validation_messages import unknown_field

__all__ = ["SchemaParams", "schema_params"]


class SchemaParams(BaseModel):
    """Parameters checked against a JSON Schema; reads like a read-only dict.

    Built by :func:`schema_params`, never subclassed by hand.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    #: the author's schema (published as is)
    json_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    #: the jsonschema validator of :attr:`json_schema`
    validator: ClassVar[Any] = None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> SchemaParams:
        """``obj`` checked against the schema; raises :class:`pydantic.ValidationError`
        listing every problem (``loc``: the path inside ``obj``)."""
        errors = sorted(
            cls.validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]
        )
        if errors:
            details: list[InitErrorDetails] = []
            for error in errors:
                details.extend(_details(error))
            raise ValidationError.from_exception_data(cls.__name__, details)
        return cls(**obj)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The author's JSON schema (a copy), whatever the options."""
        return copy.deepcopy(cls.json_schema)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (a copy)."""
        return copy.deepcopy(dict(self.__pydantic_extra__ or {}))

    def __getitem__(self, key: str) -> Any:
        return (self.__pydantic_extra__ or {})[key]

    def __contains__(self, key: object) -> bool:
        return key in (self.__pydantic_extra__ or {})

    def get(self, key: str, default: Any = None) -> Any:
        """``params[key]`` if present, else ``default``."""
        return (self.__pydantic_extra__ or {}).get(key, default)


def schema_params(
    schema: Mapping[str, Any], owner: str, *, module: str | None = None, qualname: str = "Params"
) -> type[SchemaParams]:
    """A :class:`SchemaParams` subclass for ``schema`` (``owner``: who declares it, for
    error messages, e.g. ``"action hello.say"``; ``module`` and ``qualname``: where the
    class says it is defined).

    Raises:
        TypeError: ``schema`` is not a valid JSON Schema of an object (``"type":
            "object"``), naming the problem and where it is in the schema.
    """
    from jsonschema import exceptions, validators

    schema = copy.deepcopy(dict(schema))
    if schema.get("type") != "object":
        raise TypeError(f'{owner}: a JSON Schema Params must have "type": "object"')
    validator_class = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "".join(f"[{p!r}]" for p in exc.absolute_path) or "the top level"
        raise TypeError(
            f"{owner}: Params is not a valid JSON Schema at {where}: {exc.message}"
        ) from None
    attributes = {
        "json_schema": schema,
        "validator": validator_class(schema, format_checker=validator_class.FORMAT_CHECKER),
        "__doc__": schema.get("description") or SchemaParams.__doc__,
        "__module__": module or __name__,
        "__qualname__": qualname,
    }
    return type("Params", (SchemaParams,), attributes)


def _details(error: Any) -> list[InitErrorDetails]:
    """One jsonschema error as pydantic error details, in the user's terms."""
    loc = tuple(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        return [
            _detail((*loc, name), "this field is required", error.instance)
            for name in error.validator_value
            if name not in error.instance
        ]
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list((error.schema.get("properties") or {}).keys())
        patterns = error.schema.get("patternProperties") or {}
        return [
            _detail((*loc, name), unknown_field(name, known), error.instance[name])
            for name in error.instance
            if name not in known and not _matches_any(name, patterns)
        ]
    return [_detail(loc, _message(error), error.instance)]


def _detail(loc: tuple[Any, ...], message: str, value: Any) -> InitErrorDetails:
    # without a context, pydantic formats no ``{...}`` of the message: it stays literal
    return {"type": PydanticCustomError("json_schema", message), "loc": loc, "input": value}


def _matches_any(name: str, patterns: Mapping[str, Any]) -> bool:
    return any(re.search(pattern, name) for pattern in patterns)


def _message(error: Any) -> str:
    """jsonschema's message without the rejected value, which may be a secret."""
    text = str(error.message)
    shown = repr(error.instance)
    if text.startswith(shown):
        return "the value" + text[len(shown) :]
    if shown in text:
        return f"the value does not satisfy {error.validator!r}: {error.validator_value!r}"
    return text
