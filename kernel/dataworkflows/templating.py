"""Rendering node parameters with Jinja2 in a sandbox.

Rules (documented in the README):

* Only strings are templates; numbers, booleans and nulls pass through, lists and objects
  are rendered element by element.
* A string that is exactly one expression, ``"{{ trigger.count }}"``, keeps the
  expression's type (int, list, dict, ...). Anything else renders to a string.
* Undefined names are errors (``StrictUndefined``), never empty strings.
* The environment is Jinja2's ``SandboxedEnvironment``: attribute access to dunder names,
  ``mro`` and unsafe ``str.format`` calls raise instead of escaping the sandbox.
* Data is never template source: a value that came from the trigger or a step's outputs is
  inserted as data, not rendered again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
MARKERS = ("{{", "{%", "{#")


class TemplateError(Exception):
    """A template could not be compiled or rendered; ``path`` says which parameter."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def is_template(value: Any) -> bool:
    return isinstance(value, str) and any(marker in value for marker in MARKERS)


class TemplateEngine:
    """Compiles and caches templates; renders parameter trees."""

    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self.env = env or SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self._cache: dict[str, Any] = {}

    def compile(self, source: str) -> Any:
        """Compile one template string (cached); raises ``jinja2.TemplateError``."""
        compiled = self._cache.get(source)
        if compiled is None:
            match = WHOLE_EXPRESSION.match(source)
            if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
                compiled = ("expr", self.env.compile_expression(match["expr"]))
            else:
                compiled = ("text", self.env.from_string(source))
            self._cache[source] = compiled
        return compiled

    def check(self, value: Any, path: str = "$") -> list[TemplateError]:
        """Syntax-check every template in a parameter tree without rendering it."""
        problems: list[TemplateError] = []
        for sub_path, text in _templates(value, path):
            try:
                self.compile(text)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(TemplateError(sub_path, f"template syntax error: {exc.message}"))
        return problems

    def render(self, value: Any, context: Mapping[str, Any], path: str = "$") -> Any:
        """Render a parameter tree; raises :class:`TemplateError` naming the parameter."""
        if isinstance(value, str):
            if not is_template(value):
                return value
            try:
                kind, compiled = self.compile(value)
                if kind == "expr":
                    return _plain(compiled(**context))
                return compiled.render(context)
            except jinja2.UndefinedError as exc:
                raise TemplateError(path, f"undefined: {exc.message}") from None
            except jinja2.exceptions.SecurityError as exc:
                raise TemplateError(path, f"refused by the sandbox: {exc}") from None
            except jinja2.TemplateError as exc:
                raise TemplateError(path, f"template error: {exc}") from None
            except Exception as exc:  # errors raised inside expressions (1/0, bad filter args)
                raise TemplateError(path, f"{type(exc).__name__}: {exc}") from None
        if isinstance(value, Mapping):
            return {k: self.render(v, context, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
        return value


def _templates(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)] if is_template(value) else []
    if isinstance(value, Mapping):
        return [t for k, v in value.items() for t in _templates(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _templates(v, f"{path}[{i}]")]
    return []


def _plain(value: Any) -> Any:
    """Turn what an expression returned into JSON-friendly data."""
    if isinstance(value, jinja2.Undefined):
        raise jinja2.UndefinedError("expression produced an undefined value")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
