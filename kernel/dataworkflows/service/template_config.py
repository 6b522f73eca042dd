"""Filling a workflow template's definition from its configuration (docs/templates.md).

* ``{"$config": "a.b"}`` (optionally with ``"default": ...``) is replaced by the value at
  ``a.b`` of the configuration, keeping its JSON type (a number stays a number).
* In a string, ``${a.b}`` is replaced by that value as text (strings as they are, other
  values as JSON); ``$${`` writes a literal ``${``.
* Everything else (including ``{{ ... }}`` templates the workflow renders at run time) is
  left as it is.

The configuration is checked against the template's JSON Schema (2020-12) first; top-level
``default`` values of the schema's ``properties`` fill missing keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

_PLACEHOLDER = re.compile(r"\$(\$?)\{([A-Za-z0-9_.-]+)\}")
_MISSING = object()


def schema_problems(schema: Any, path: str = "$.configSchema") -> list[dict[str, str]]:
    """Why ``schema`` is not a usable JSON Schema (empty: it is)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        return [{"path": path + where, "code": "invalid_schema", "message": exc.message}]
    if schema.get("type", "object") != "object":
        return [
            {
                "path": path + ".type",
                "code": "invalid_schema",
                "message": "a configuration is a JSON object: the schema's type is 'object'",
            }
        ]
    return []


def config_problems(schema: dict[str, Any], config: Any) -> list[dict[str, str]]:
    """Every way ``config`` breaks ``schema`` (paths under ``$.config``)."""
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(
            {
                "path": "$.config" + where,
                "code": f"schema_{error.validator}",
                "message": error.message,
            }
        )
    return problems


def with_defaults(schema: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the schema's top-level property defaults for missing keys."""
    filled = dict(config)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = prop["default"]
    return filled


def references(value: Any, path: str = "$.definition") -> Iterator[tuple[str, str]]:
    """``(where, config path)`` of every placeholder in a definition."""
    if isinstance(value, dict):
        if "$config" in value:
            yield path, str(value["$config"])
            return
        for key, item in value.items():
            yield from references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, f"{path}[{index}]")
    elif isinstance(value, str):
        for match in _PLACEHOLDER.finditer(value):
            if not match[1]:
                yield path, match[2]


def placeholder_problems(definition: Any) -> list[dict[str, str]]:
    """Malformed ``{"$config": ...}`` objects (only ``"default"`` may stand beside it)."""
    problems = []
    for where, name in references(definition):
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", name):
            problems.append(
                {
                    "path": where,
                    "code": "invalid_placeholder",
                    "message": f"{name!r} is not a config path such as 'a.b'",
                }
            )
    return problems + list(_bad_objects(definition, "$.definition"))


def _bad_objects(value: Any, path: str) -> Iterator[dict[str, str]]:
    if isinstance(value, dict):
        if "$config" in value and set(value) - {"$config", "default"}:
            yield {
                "path": path,
                "code": "invalid_placeholder",
                "message": 'a {"$config": ...} object may hold only "default" beside it',
            }
        for key, item in value.items():
            yield from _bad_objects(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _bad_objects(item, f"{path}[{index}]")


def fill(value: Any, config: dict[str, Any], problems: list[dict[str, str]], path: str) -> Any:
    """``value`` with its placeholders replaced; unresolved ones are added to ``problems``."""
    if isinstance(value, dict):
        if "$config" in value:
            found = _lookup(config, str(value["$config"]))
            if found is _MISSING:
                if "default" in value:
                    return value["default"]
                problems.append(_unresolved(path, str(value["$config"])))
                return None
            return found
        return {key: fill(item, config, problems, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, config, problems, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match[1]:
                return "${" + match[2] + "}"
            found = _lookup(config, match[2])
            if found is _MISSING:
                problems.append(_unresolved(path, match[2]))
                return ""
            return found if isinstance(found, str) else json.dumps(found)

        return _PLACEHOLDER.sub(replace, value)
    return value


def _unresolved(path: str, name: str) -> dict[str, str]:
    return {
        "path": path,
        "code": "config_value_missing",
        "message": f"the configuration has no value at {name!r} and the template gives no default",
    }


def _lookup(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value
