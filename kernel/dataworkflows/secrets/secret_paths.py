"""Where the secrets are in a plugin's config: the JSON paths of the ``writeOnly``
subschemas of its model's JSON schema, and a way to apply a function at those paths.
:mod:`dataworkflows.secrets.fields` seals, opens and masks the values found there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel


class _Wildcard:
    """A path step matching every item of a list (``[*]``) or value of an object (``{*}``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


ANY_ITEM = _Wildcard("[*]")
ANY_VALUE = _Wildcard("{*}")

Step = str | _Wildcard
Path = tuple[Step, ...]


def schema_secret_paths(schema: Mapping[str, Any]) -> frozenset[Path]:
    """The paths of every ``writeOnly: true`` subschema of a JSON schema.

    Follows ``$ref`` into ``$defs``, ``anyOf``/``oneOf``/``allOf``, ``properties``,
    ``items`` (as :data:`ANY_ITEM`) and ``additionalProperties`` (as :data:`ANY_VALUE`).
    """
    defs = schema.get("$defs", {}) if isinstance(schema, Mapping) else {}
    found: set[Path] = set()

    def walk(node: Any, path: Path, seen: frozenset[str]) -> None:
        if not isinstance(node, Mapping):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen and name in defs:
                walk(defs[name], path, seen | {name})
        if node.get("writeOnly") is True:
            found.add(path)
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key) or ():
                walk(sub, path, seen)
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, (*path, name), seen)
        if isinstance(node.get("items"), Mapping):
            walk(node["items"], (*path, ANY_ITEM), seen)
        if isinstance(node.get("additionalProperties"), Mapping):
            walk(node["additionalProperties"], (*path, ANY_VALUE), seen)

    walk(schema, (), frozenset())
    return frozenset(found)


_MODEL_PATHS: dict[type[BaseModel], frozenset[Path]] = {}


def model_secret_paths(model: type[BaseModel]) -> frozenset[Path]:
    """The secret paths of a pydantic model, under its aliases and its field names
    (a config may be written either way when the model populates by name)."""
    paths = _MODEL_PATHS.get(model)
    if paths is None:
        paths = schema_secret_paths(model.model_json_schema(by_alias=True)) | (
            schema_secret_paths(model.model_json_schema(by_alias=False))
        )
        _MODEL_PATHS[model] = paths
    return paths


def _visit(node: Any, path: Path, index: int, where: str, fn: Callable[[Any, str], Any]) -> Any:
    """A copy of ``node`` with ``fn(value, json_path)`` applied at ``path``."""
    if index == len(path):
        return node if node is None else fn(node, where)
    step = path[index]
    if step is ANY_ITEM:
        if not isinstance(node, list):
            return node
        return [_visit(v, path, index + 1, f"{where}[{i}]", fn) for i, v in enumerate(node)]
    if step is ANY_VALUE:
        if not isinstance(node, Mapping):
            return node
        return {k: _visit(v, path, index + 1, f"{where}.{k}", fn) for k, v in node.items()}
    if not isinstance(node, Mapping) or step not in node:
        return node
    out = dict(node)
    out[step] = _visit(node[step], path, index + 1, f"{where}.{step}", fn)
    return out


def transform(value: Any, paths: frozenset[Path], fn: Callable[[Any, str], Any]) -> Any:
    """``value`` (a JSON object) with ``fn(secret, json_path)`` applied to every secret."""
    for path in sorted(paths, key=lambda p: tuple(str(s) for s in p)):
        value = _visit(value, path, 0, "$", fn)
    return value
