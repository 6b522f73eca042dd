"""The work budget of templates and conditions.

A :class:`Budget` (from :class:`TemplateLimits`) counts operations and the size of what an
evaluation builds and watches the clock;
:func:`~dataworkflows.engine.template_sandbox._harden` installs the code generator and
sandbox hooks that charge it (loops, calls, attribute reads, filters, string building).
Also here: the static shape checks — whether a template is cheap enough to run inline, and
whether its loops must overrun the budget (refused at publish).
:mod:`dataworkflows.engine.templating` renders and evaluates with it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes as ast

#: the most characters or items ``*`` may produce
MAX_REPEAT = 1_000_000
#: the deadline is looked at every this many operations
CLOCK_EVERY = 64

#: the inline (event-loop) budget of a template whose shape is cheap; past it, the
#: evaluation is done again in a worker process with the full budget
INLINE_OPERATIONS = 10_000
INLINE_SIZE = 1_000_000
INLINE_SECONDS = 0.01
#: templates longer than this never run inline
INLINE_SOURCE_CHARS = 2_000

#: node types whose evaluation costs at most a bounded number of budgeted operations
_CHEAP_NODES = (
    ast.Template, ast.Output, ast.TemplateData, ast.If, ast.Assign, ast.Const, ast.Name,
    ast.Getattr, ast.Getitem, ast.Slice, ast.Compare, ast.Operand, ast.And, ast.Or, ast.Not,
    ast.Neg, ast.Pos, ast.CondExpr, ast.Concat, ast.Add, ast.Sub, ast.Mul, ast.Div,
    ast.FloorDiv, ast.Mod, ast.Pow, ast.List, ast.Tuple, ast.Dict, ast.Pair, ast.Keyword,
    ast.Filter, ast.Test, ast.For,  # a loop spends one operation per item: bounded inline
)  # fmt: skip
#: filters that walk their input once (charged per item) and take no size argument
_CHEAP_FILTERS = frozenset(
    "abs capitalize count d default dictsort e escape first float int items join last "
    "length list lower max min reverse round safe sort string sum title tojson trim unique "
    "upper wordcount".split()
)
_CHEAP_TESTS = frozenset(
    "boolean callable defined divisibleby eq equalto escaped even false filter float ge gt "
    "in integer iterable le lower lt mapping ne none number odd sameas sequence string test "
    "true undefined upper".split()
)


@dataclass(frozen=True)
class TemplateLimits:
    """The work one template or condition evaluation may do (``DATAWORKFLOWS_TEMPLATE_*``).

    ``max_operations``: loop iterations, calls, attribute/item reads, operators and filter
    calls, plus one per item a filter or method walks. ``max_size``: characters or items
    of every string, list and output the evaluation builds, added up. ``timeout``: seconds
    of wall clock (a worker process that overruns it is killed). ``workers``: processes
    for evaluations that do not run inline. ``memory_mb``: address space a worker may
    grow by. ``cache_size``: compiled templates kept per process (least recently used go).
    """

    max_operations: int = 1_000_000
    max_size: int = 10_000_000
    timeout: float = 2.0
    workers: int = 2
    memory_mb: int = 512
    cache_size: int = 1024

    def inline(self) -> TemplateLimits:
        """The smaller budget of an evaluation on the event loop."""
        return TemplateLimits(
            max_operations=min(self.max_operations, INLINE_OPERATIONS),
            max_size=min(self.max_size, INLINE_SIZE),
            timeout=min(self.timeout, INLINE_SECONDS),
        )


class BudgetExceeded(Exception):
    """Raised inside the sandbox when the budget is spent (becomes
    :class:`TemplateBudgetExceeded` with the parameter's path)."""


class NeedsWorker(Exception):
    """Raised by an inline evaluation that went over the inline budget: evaluate it again
    in a worker process with the full budget."""


class Budget:
    """The work left to one evaluation; the sandbox spends it (see :class:`TemplateLimits`)."""

    __slots__ = ("_clock_at", "_inline", "deadline", "limits", "operations", "size")

    def __init__(self, limits: TemplateLimits, *, inline: bool = False) -> None:
        self.limits = limits
        self.operations = 0
        self.size = 0
        self.deadline = time.monotonic() + limits.timeout
        self._clock_at = CLOCK_EVERY
        self._inline = inline

    def spend(self, operations: int = 1, size: int = 0) -> None:
        self.operations += operations
        self.size += size
        if self.operations > self.limits.max_operations:
            self.exceeded(f"more than {self.limits.max_operations} operations")
        if self.size > self.limits.max_size:
            self.exceeded(f"more than {self.limits.max_size} characters or items built")
        if self.operations >= self._clock_at:
            self._clock_at = self.operations + CLOCK_EVERY
            if time.monotonic() > self.deadline:
                self.exceeded(f"took longer than {self.limits.timeout:g} s")

    def room(self) -> int:
        """Characters or items that may still be built."""
        return self.limits.max_size - self.size

    def exceeded(self, what: str) -> None:
        if self._inline:
            raise NeedsWorker(what)
        raise BudgetExceeded(f"over its budget: {what}")


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "dataworkflows_template_budget", default=None
)


def current_budget() -> Budget:
    """The budget of the evaluation in progress (a default one outside any)."""
    return _BUDGET.get() or Budget(TemplateLimits())


@contextmanager
def spending(budget: Budget) -> Iterator[Budget]:
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _cheap_tree(tree: ast.Node) -> bool:
    for node in tree.find_all(ast.Node):
        if not isinstance(node, _CHEAP_NODES):
            return False
        if isinstance(node, ast.Filter) and node.name not in _CHEAP_FILTERS:
            return False
        if isinstance(node, ast.Test) and node.name not in _CHEAP_TESTS:
            return False
    return True


def _known_length(node: ast.Node) -> int | None:
    """How many items a loop over ``node`` takes, when the template alone says so."""
    if isinstance(node, ast.Filter) and node.node is not None and node.name in ("list", "sort"):
        return _known_length(node.node)
    if isinstance(node, ast.List | ast.Tuple):
        return len(node.items)
    if isinstance(node, ast.Const) and isinstance(node.value, str | list | tuple):
        return len(node.value)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.node, ast.Name)
        and node.node.name == "range"
        and not node.kwargs
        and node.dyn_args is None
        and all(isinstance(a, ast.Const) and type(a.value) is int for a in node.args)
        and 1 <= len(node.args) <= 3
    ):
        try:
            return len(range(*(a.value for a in node.args)))
        except (ValueError, OverflowError):
            return None
    return None


def _static_overrun(tree: ast.Template, limits: TemplateLimits) -> str | None:
    """Why ``tree`` must exceed ``limits`` whatever its data, or None if that is not known."""
    worst = 0

    def walk(node: ast.Node, times: int) -> None:
        nonlocal worst
        if not isinstance(node, ast.For):
            for child in node.iter_child_nodes():
                walk(child, times)
            return
        walk(node.iter, times)
        count = _known_length(node.iter) or 1
        worst = max(worst, times * count)
        for inner in (*node.body, *node.else_, *([node.test] if node.test else [])):
            walk(inner, times * count)

    walk(tree, 1)
    if worst > limits.max_operations:
        return (
            f"its loops iterate {worst:,} times; the budget is {limits.max_operations:,} "
            "operations (DATAWORKFLOWS_TEMPLATE_MAX_OPERATIONS)"
        )
    for mul in tree.find_all(ast.Mul):
        left, right = mul.left, mul.right
        if isinstance(left, ast.Const) and isinstance(right, ast.Const):
            size = repeat_size(left.value, right.value)
            if size is not None and size > min(limits.max_size, MAX_REPEAT):
                return f"'*' builds {size:,} characters or items, over the budget"
    return None


def repeat_size(left: Any, right: Any) -> int | None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and type(times) is int:
            return len(seq) * times
    return None
