"""Rendering node parameters and evaluating edge conditions with Jinja2 in a sandbox.

Rules (stated for users in ``docs/semantics.md``):

* Only strings are templates; numbers, booleans and nulls pass through, lists and objects
  are rendered element by element.
* A string that is exactly one expression, ``"{{ trigger.count }}"``, keeps the
  expression's type (int, list, dict, ...). Anything else renders to a string.
* Undefined names are errors (``StrictUndefined``), never empty strings or nulls, also
  for a whole expression and for values nested in a list or object it returns.
* An edge ``condition`` is one expression (``nodes.check.outputs.ok and trigger.n > 2``;
  ``{{ ... }}`` around it is allowed and means the same), true or false by Python's
  rules: ``false``, ``null``, ``0``, ``""``, ``[]`` and ``{}`` are false.
* ``a.b`` on an object reads the key ``b`` first: JSON keys named like dict methods
  (``items``, ``keys``, ``values``) are data.
* The environment is Jinja2's ``SandboxedEnvironment``: attribute access to dunder names,
  ``mro`` and unsafe ``str.format`` calls raise instead of escaping the sandbox; ``*`` and
  ``**`` refuse to build huge strings, lists or numbers.
* Data is never template source: a value that came from the trigger or a step's outputs is
  inserted as data, not rendered again.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta
from jinja2 import nodes as ast
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
MARKERS = ("{{", "{%", "{#")

#: the most characters or items ``*`` may produce, and the largest exponent ``**`` accepts
MAX_REPEAT = 1_000_000
MAX_EXPONENT = 4096


class TemplateError(Exception):
    """A template could not be compiled or rendered; ``path`` says which parameter."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class References:
    """What one template or condition reads from its context (found without running it).

    ``names`` are the top-level variables it reads (``trigger``, ``nodes``, ...);
    ``node_ids`` the ids it names literally as ``nodes.<id>`` or ``nodes['<id>']``.
    """

    path: str
    names: frozenset[str]
    node_ids: frozenset[str]


def is_template(value: Any) -> bool:
    """True if ``value`` is a string with Jinja2 markup in it."""
    return isinstance(value, str) and any(marker in value for marker in MARKERS)


def new_environment() -> SandboxedEnvironment:
    """The kernel's template environment: sandboxed, strict about undefined names."""
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


class TemplateEngine:
    """Compiles and caches templates; renders parameter trees and evaluates conditions."""

    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self.env = env or new_environment()
        if isinstance(self.env, SandboxedEnvironment):
            _harden(self.env)
        self._cache: dict[str, Any] = {}
        self._conditions: dict[str, Any] = {}

    # -- parameters -----------------------------------------------------------------------

    def compile(self, source: str) -> Any:
        """Compile one template string (cached); raises ``jinja2.TemplateError``."""
        compiled = self._cache.get(source)
        if compiled is None:
            expr = _whole_expression(source)
            if expr is not None:
                compiled = ("expr", self.env.compile_expression(expr, undefined_to_none=False))
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
            with _errors(path):
                kind, compiled = self.compile(value)
                if kind == "expr":
                    return _plain(compiled(**context))
                return compiled.render(context)
        if isinstance(value, Mapping):
            return {k: self.render(v, context, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def references(self, value: Any, path: str = "$") -> list[References]:
        """What each (syntactically valid) template in a parameter tree reads."""
        found = []
        for sub_path, text in _templates(value, path):
            try:
                tree = self.env.parse(text)
            except jinja2.TemplateSyntaxError:
                continue
            found.append(_references(sub_path, tree))
        return found

    # -- conditions -----------------------------------------------------------------------

    def compile_condition(self, source: str) -> Any:
        """Compile an edge condition (cached); raises ``jinja2.TemplateSyntaxError``."""
        compiled = self._conditions.get(source)
        if compiled is None:
            compiled = self.env.compile_expression(
                _condition_expression(source), undefined_to_none=False
            )
            self._conditions[source] = compiled
        return compiled

    def check_condition(self, source: str, path: str = "$") -> list[TemplateError]:
        """Syntax-check a condition; an empty list means it compiles."""
        try:
            self.compile_condition(source)
        except jinja2.TemplateSyntaxError as exc:
            return [TemplateError(path, f"condition syntax error: {exc.message}")]
        return []

    def evaluate_condition(self, source: str, context: Mapping[str, Any], path: str = "$") -> bool:
        """Evaluate a condition to True or False; raises :class:`TemplateError`."""
        with _errors(path):
            value = self.compile_condition(source)(**context)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return bool(value)

    def condition_references(self, source: str, path: str = "$") -> References | None:
        """What a (syntactically valid) condition reads; None if it does not compile."""
        try:
            expr = _parse_expression(self.env, _condition_expression(source))
        except jinja2.TemplateSyntaxError:
            return None
        tree = ast.Template([ast.Output([expr], lineno=1)], lineno=1)
        tree.set_environment(self.env)
        return _references(path, tree)


@contextmanager
def _errors(path: str) -> Iterator[None]:
    """Turn every error raised while rendering into a :class:`TemplateError` at ``path``."""
    try:
        yield
    except TemplateError:
        raise
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(path, f"refused by the sandbox: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(path, f"undefined: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(path, f"template error: {exc}") from None
    except Exception as exc:  # raised inside expressions: 1/0, bad filter arguments, ...
        raise TemplateError(path, f"{type(exc).__name__}: {exc}") from None


def _whole_expression(source: str) -> str | None:
    match = WHOLE_EXPRESSION.match(source)
    if match and "{{" not in match["expr"] and "}}" not in match["expr"]:
        return str(match["expr"])
    return None


def _condition_expression(source: str) -> str:
    expr = _whole_expression(source)
    if expr is None:
        if any(marker in source for marker in MARKERS):
            raise jinja2.TemplateSyntaxError(
                "a condition is one expression, optionally inside a single {{ }}", 1
            )
        expr = source
    if not expr.strip():
        raise jinja2.TemplateSyntaxError("the condition is empty", 1)
    return expr


def _parse_expression(env: jinja2.Environment, source: str) -> ast.Expr:
    parser = Parser(env, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    return expr


def _references(path: str, tree: ast.Template) -> References:
    names = frozenset(meta.find_undeclared_variables(tree))
    node_ids: set[str] = set()
    if "nodes" in names:
        for getattr_ in tree.find_all(ast.Getattr):
            if isinstance(getattr_.node, ast.Name) and getattr_.node.name == "nodes":
                node_ids.add(getattr_.attr)
        for getitem in tree.find_all(ast.Getitem):
            if (
                isinstance(getitem.node, ast.Name)
                and getitem.node.name == "nodes"
                and isinstance(getitem.arg, ast.Const)
                and isinstance(getitem.arg.value, str)
            ):
                node_ids.add(getitem.arg.value)
    return References(path, names, frozenset(node_ids))


def _templates(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)] if is_template(value) else []
    if isinstance(value, Mapping):
        return [t for k, v in value.items() for t in _templates(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _templates(v, f"{path}[{i}]")]
    return []


def _plain(value: Any) -> Any:
    """Turn what an expression returned into JSON data; undefined parts raise."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _harden(env: SandboxedEnvironment) -> None:
    """Adapt a sandbox to JSON data: keys before methods, bounded ``*`` and ``**``.

    Must run before the environment compiles anything (``intercepted_binops`` is read at
    compile time).
    """
    env.intercepted_binops = frozenset({"*", "**"})
    env.call_binop = types.MethodType(_call_binop, env)  # type: ignore[method-assign]
    env.getattr = types.MethodType(_getattr, env)  # type: ignore[method-assign]


def _getattr(env: SandboxedEnvironment, obj: Any, attribute: str) -> Any:
    """``a.b`` on an object reads its key ``b`` first, so JSON keys named like dict
    methods (``items``, ``keys``, ``values``, ``get``...) are data, as users expect."""
    if isinstance(obj, Mapping):
        try:
            return obj[attribute]
        except (KeyError, TypeError):
            pass
    return SandboxedEnvironment.getattr(env, obj, attribute)


def _call_binop(
    env: SandboxedEnvironment, context: Any, operator: str, left: Any, right: Any
) -> Any:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(times, int)
                and len(seq) * times > MAX_REPEAT
            ):
                raise jinja2.exceptions.SecurityError(
                    f"'*' would build more than {MAX_REPEAT} characters or items"
                )
    elif (
        operator == "**"
        and isinstance(left, int | float)
        and isinstance(right, int | float)
        and abs(right) > MAX_EXPONENT
        and abs(left) > 1
    ):
        raise jinja2.exceptions.SecurityError(f"'**' exponents are limited to {MAX_EXPONENT}")
    return SandboxedEnvironment.call_binop(env, context, operator, left, right)
