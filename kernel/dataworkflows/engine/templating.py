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
* Every evaluation has a work budget (:class:`TemplateLimits`): the sandbox counts
  operations (loop iterations, calls, attribute and item reads, operators, filters, one
  per item a filter walks) and the characters or items strings and lists are built with,
  and checks a wall-clock deadline; past any of them the evaluation stops with
  :class:`TemplateBudgetExceeded` (``template_budget_exceeded``). Constant expressions are
  not folded at compile time (``optimized=False``), so publishing never runs template code.
* :class:`~dataworkflows.engine.template_pool.TemplatePool` keeps evaluation off the event loop:
  only templates whose shape is cheap by construction (:meth:`TemplateEngine.is_cheap`)
  run inline, under a small budget; the rest run in worker processes killed at the limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta
from jinja2 import nodes as ast
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import LRUCache

from dataworkflows.engine.template_budget import (
    INLINE_SOURCE_CHARS,
    Budget,
    BudgetExceeded,
    NeedsWorker,
    TemplateLimits,
    _cheap_tree,
    _static_overrun,
    spending,
)
from dataworkflows.engine.template_errors import TemplateBudgetExceeded, TemplateError
from dataworkflows.engine.template_sandbox import _harden

if TYPE_CHECKING:
    from dataworkflows.engine.template_pool import TemplatePool

WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
MARKERS = ("{{", "{%", "{#")


@dataclass(frozen=True)
class References:
    """What one template or condition reads from its context (found without running it).

    ``names`` are the top-level variables it reads (``trigger``, ``nodes``, ...);
    ``node_ids`` the ids it names literally as ``nodes.<id>`` or ``nodes['<id>']``;
    ``dynamic`` is True when it also reads ``nodes`` some other way (``nodes[name]``,
    ``nodes.items()``, ``{{ nodes }}``), so that any node may be read.
    """

    path: str
    names: frozenset[str]
    node_ids: frozenset[str]
    dynamic: bool = False


def is_template(value: Any) -> bool:
    """True if ``value`` is a string with Jinja2 markup in it."""
    return isinstance(value, str) and any(marker in value for marker in MARKERS)


def new_environment() -> SandboxedEnvironment:
    """The kernel's template environment: sandboxed, strict about undefined names."""
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


class TemplateEngine:
    """Compiles and caches templates; renders parameter trees and evaluates conditions.

    The synchronous methods evaluate here and now under a budget; the ``*_async`` ones
    never block the event loop for long (cheap shapes inline, the rest in worker
    processes, see :mod:`dataworkflows.engine.template_pool`).
    """

    def __init__(
        self, env: jinja2.Environment | None = None, limits: TemplateLimits | None = None
    ) -> None:
        self.env = env or new_environment()
        self.limits = limits or TemplateLimits()
        if isinstance(self.env, SandboxedEnvironment):
            _harden(self.env)
        size = max(1, self.limits.cache_size)
        self._cache: LRUCache = LRUCache(size)
        self._conditions: LRUCache = LRUCache(size)
        self._cheap: LRUCache = LRUCache(size)
        self._pool: TemplatePool | None = None

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
            except RecursionError:
                problems.append(TemplateError(sub_path, "template syntax error: nested too deeply"))
        return problems

    def render(
        self, value: Any, context: Mapping[str, Any], path: str = "$", budget: Budget | None = None
    ) -> Any:
        """Render a parameter tree; raises :class:`TemplateError` naming the parameter
        (:class:`TemplateBudgetExceeded` past the budget, shared by the whole tree)."""
        with spending(budget or Budget(self.limits)):
            return self._render(value, context, path)

    def _render(self, value: Any, context: Mapping[str, Any], path: str) -> Any:
        if isinstance(value, str):
            if not is_template(value):
                return value
            with _errors(path):
                kind, compiled = self.compile(value)
                if kind == "expr":
                    return _plain(compiled(**context))
                return compiled.render(context)
        if isinstance(value, Mapping):
            return {k: self._render(v, context, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def references(self, value: Any, path: str = "$") -> list[References]:
        """What each (syntactically valid) template in a parameter tree reads."""
        return [_references(sub_path, tree) for sub_path, tree in self._trees(value, path)]

    def shape_problems(self, value: Any, path: str = "$") -> list[TemplateError]:
        """Templates whose static shape already exceeds the budget (publish-time refusal):
        nested loops over ranges or literals of known length, constant ``*`` products."""
        problems = []
        for sub_path, tree in self._trees(value, path):
            message = _static_overrun(tree, self.limits)
            if message is not None:
                problems.append(TemplateBudgetExceeded(sub_path, message))
        return problems

    def _trees(self, value: Any, path: str) -> Iterator[tuple[str, ast.Template]]:
        """The parsed (syntactically valid) templates of a parameter tree."""
        for sub_path, text in _templates(value, path):
            try:
                yield sub_path, self.env.parse(text)
            except (jinja2.TemplateSyntaxError, RecursionError):
                continue

    def is_cheap(self, value: Any) -> bool:
        """True if every template in a tree has a shape in which every step spends the
        budget before doing work (no calls, macros or size-taking filters; loops spend
        per item) and is short: these render inline on the event loop, under the small
        inline budget."""
        return all(self._cheap_source(text, False) for _, text in _templates(value, "$"))

    def _cheap_source(self, source: str, condition: bool) -> bool:
        key = (condition, source)
        verdict = self._cheap.get(key)
        if verdict is None:
            verdict = len(source) <= INLINE_SOURCE_CHARS
            if verdict:
                try:
                    if condition:
                        expr = _parse_expression(self.env, _condition_expression(source))
                        tree = ast.Template([ast.Output([expr])])
                    else:
                        tree = self.env.parse(source)
                except (jinja2.TemplateSyntaxError, RecursionError):
                    tree = None  # fails fast, in a worker; no need to know why here
                verdict = tree is not None and _cheap_tree(tree)
            self._cheap[key] = verdict
        return bool(verdict)

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
        except RecursionError:
            return [TemplateError(path, "condition syntax error: nested too deeply")]
        return []

    def evaluate_condition(
        self,
        source: str,
        context: Mapping[str, Any],
        path: str = "$",
        budget: Budget | None = None,
    ) -> bool:
        """Evaluate a condition to True or False; raises :class:`TemplateError`."""
        with spending(budget or Budget(self.limits)), _errors(path):
            value = self.compile_condition(source)(**context)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return bool(value)

    def condition_is_cheap(self, source: str) -> bool:
        """:meth:`is_cheap` for a condition."""
        return self._cheap_source(source, True)

    def condition_references(self, source: str, path: str = "$") -> References | None:
        """What a (syntactically valid) condition reads; None if it does not compile."""
        try:
            expr = _parse_expression(self.env, _condition_expression(source))
        except (jinja2.TemplateSyntaxError, RecursionError):
            return None
        tree = ast.Template([ast.Output([expr], lineno=1)], lineno=1)
        tree.set_environment(self.env)
        return _references(path, tree)

    # -- off the event loop ---------------------------------------------------------------

    @property
    def pool(self) -> TemplatePool:
        """The worker processes of this engine (started on first need)."""
        if self._pool is None:
            from dataworkflows.engine.template_pool import TemplatePool

            self._pool = TemplatePool(self)
        return self._pool

    async def render_async(self, value: Any, context: Mapping[str, Any], path: str = "$") -> Any:
        """:meth:`render` without blocking the event loop for more than a few ms."""
        return await self.pool.render(value, context, path)

    async def evaluate_condition_async(
        self, source: str, context: Mapping[str, Any], path: str = "$"
    ) -> bool:
        """:meth:`evaluate_condition` without blocking the event loop for more than a few ms."""
        return await self.pool.evaluate_condition(source, context, path)

    async def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            await self._pool.close()


@contextmanager
def _errors(path: str) -> Iterator[None]:
    """Turn every error raised while rendering into a :class:`TemplateError` at ``path``."""
    try:
        yield
    except (TemplateError, NeedsWorker):
        raise
    except BudgetExceeded as exc:
        raise TemplateBudgetExceeded(path, str(exc)) from None
    except RecursionError:
        raise TemplateBudgetExceeded(path, "over its budget: recursion too deep") from None
    except MemoryError:
        raise TemplateBudgetExceeded(path, "over its budget: out of memory") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(path, f"refused by the sandbox: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(path, f"undefined: {undefined_message(exc.message)}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(path, f"template error: {exc}") from None
    except Exception as exc:  # raised inside expressions: 1/0, bad filter arguments, ...
        raise TemplateError(path, f"{type(exc).__name__}: {exc}") from None


_MISSING_KEY = re.compile(r"^'(?:dict|list) object' has no attribute '(?P<name>[^']*)'$")


def undefined_message(message: str | None) -> str:
    """Jinja's "'dict object' has no attribute 'x'" in the author's terms."""
    match = _MISSING_KEY.match(message or "")
    if match is None:
        return message or "an undefined value was used"
    name = match["name"]
    return (
        f"there is no key {name!r} here; to treat a missing key as absent write "
        f"`….get({name!r})` or `… is defined`"
    )


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
    literal = 0  # reads of ``nodes`` that name a node literally
    if "nodes" in names:
        for getattr_ in tree.find_all(ast.Getattr):
            if isinstance(getattr_.node, ast.Name) and getattr_.node.name == "nodes":
                node_ids.add(getattr_.attr)
                literal += 1
        for getitem in tree.find_all(ast.Getitem):
            if (
                isinstance(getitem.node, ast.Name)
                and getitem.node.name == "nodes"
                and isinstance(getitem.arg, ast.Const)
                and isinstance(getitem.arg.value, str)
            ):
                node_ids.add(getitem.arg.value)
                literal += 1
    # any other use of ``nodes`` (a variable key, a loop, the whole mapping) may read any
    # node; a name shadowed by ``{% set nodes = ... %}`` is not undeclared and not counted
    reads = sum(
        1
        for name in tree.find_all(ast.Name)
        if name.name == "nodes" and name.ctx == "load"
    ) if "nodes" in names else 0  # fmt: skip
    return References(path, names, frozenset(node_ids), dynamic=reads > literal)


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


# -- static shape -----------------------------------------------------------------------------


__all__ = [
    "Budget",
    "NeedsWorker",
    "References",
    "TemplateBudgetExceeded",
    "TemplateEngine",
    "TemplateError",
    "TemplateLimits",
    "is_template",
    "new_environment",
    "undefined_message",
]
