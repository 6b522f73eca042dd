"""The work budget of templates and conditions, and the sandbox that enforces it.

A :class:`Budget` (from :class:`TemplateLimits`) counts operations and the size of what an
evaluation builds and watches the clock; :func:`_harden` installs the code generator and
sandbox hooks that charge it (loops, calls, attribute reads, filters, string building).
Also here: the static shape checks — whether a template is cheap enough to run inline, and
whether its loops must overrun the budget (refused at publish).
:mod:`dataworkflows.engine.templating` renders and evaluates with it.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes as ast
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

MAX_REPEAT = 1_000_000
MAX_EXPONENT = 4096
#: the most bits an integer ``**`` may produce
MAX_POWER_BITS = 64 * 1024
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
_PRINTF_WIDTH = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_DIGITS = re.compile(r"\d+")


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
            size = _repeat_size(left.value, right.value)
            if size is not None and size > min(limits.max_size, MAX_REPEAT):
                return f"'*' builds {size:,} characters or items, over the budget"
    return None


def _repeat_size(left: Any, right: Any) -> int | None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and type(times) is int:
            return len(seq) * times
    return None


# -- the budgeted sandbox -------------------------------------------------------------------


class BudgetCodeGenerator(CodeGenerator):
    """Compiles loops and ``~`` so that they spend the evaluation's budget."""

    def visit_For(self, node: ast.For, frame: Frame) -> None:
        if not getattr(node, "dw_budgeted", False):
            node.iter = ast.Call(
                ast.EnvironmentAttribute("dw_iterate"), [node.iter], [], None, None
            )
            node.dw_budgeted = True  # type: ignore[attr-defined]
        super().visit_For(node, frame)

    def visit_Concat(self, node: ast.Concat, frame: Frame) -> None:
        self.write("environment.dw_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _iterate(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, one operation each."""
    budget = current_budget()
    for item in iterable:
        budget.spend()
        yield item


def _concat(parts: Iterable[Any]) -> str:
    budget = current_budget()
    strings = []
    for part in parts:
        text = str(part)
        budget.spend(1, len(text))
        strings.append(text)
    return "".join(strings)


@jinja2.pass_eval_context
def _finalize_output(eval_ctx: Any, value: Any) -> Any:
    """Every ``{{ }}`` output is charged for its size (and is never evaluated at
    compile time: a finalizer that takes a context turns that off)."""
    budget = current_budget()
    budget.spend(1, _length(value) if isinstance(value, str) else len(str(value)))
    finalize = eval_ctx.environment.dw_finalize
    return value if finalize is None else finalize(value)


def _length(value: Any) -> int:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset | range):
        return len(value)
    return 0


def _check_room(budget: Budget, what: str, args: Iterable[Any]) -> None:
    """Refuse size arguments (widths, counts) larger than what may still be built."""
    room = budget.room()
    for arg in args:
        if type(arg) is int and arg > room:
            budget.exceeded(f"{what} with a size argument of {arg}")


def _check_format(budget: Budget, fmt: str, args: Iterable[Any] = ()) -> None:
    """Refuse ``%``/``format`` widths and precisions larger than what may still be built."""
    room = budget.room()
    widths = [w for m in _PRINTF_WIDTH.finditer(fmt) for w in m.groups() if w]
    widths += [d for m in _FORMAT_SPEC.finditer(fmt) for d in _DIGITS.findall(m[1])]
    for width in widths:
        if width == "*":
            _check_room(budget, "a '*' width", args)
        elif len(width) > 12 or int(width) > room:
            budget.exceeded(f"a format width of {width}")


def _check_replace(budget: Budget, text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = text.count(old) if old else len(text) + 1
        budget.spend(1 + len(text) // 64, count * max(0, len(new) - len(old)))


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    index = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        value = args[index] if len(args) > index else None
        budget.spend(1 + _length(value))
        rest = (*args[index + 1 :], *kwargs.values())
        _check_room(budget, f"filter {name!r}", rest)
        if name == "replace" and len(args) > index + 2:
            _check_replace(budget, value, args[index + 1], args[index + 2])
        elif name == "format" and isinstance(value, str):
            _check_format(budget, value, rest)
        result = func(*args, **kwargs)
        budget.spend(0, _length(result))
        return result

    filter_.dw_budgeted = True  # type: ignore[attr-defined]
    return filter_


def _harden(env: SandboxedEnvironment) -> None:
    """Adapt a sandbox to JSON data (keys before methods) and make every operation
    spend the evaluation's :class:`Budget`.

    Must run before the environment compiles anything (``intercepted_binops``, the code
    generator and the finalizer are read at compile time).
    """
    if getattr(env, "dw_hardened", False):
        return
    env.dw_hardened = True  # type: ignore[attr-defined]
    env.optimized = False  # no constant folding: compiling never runs template code
    env.code_generator_class = BudgetCodeGenerator
    env.intercepted_binops = frozenset({"*", "**", "+", "%"})
    env.call_binop = types.MethodType(_call_binop, env)  # type: ignore[method-assign]
    env.getattr = types.MethodType(_getattr, env)  # type: ignore[method-assign]
    env.getitem = types.MethodType(_getitem, env)  # type: ignore[method-assign]
    env.call = types.MethodType(_call, env)  # type: ignore[method-assign]
    env.dw_iterate = _iterate  # type: ignore[attr-defined]
    env.dw_concat = _concat  # type: ignore[attr-defined]
    env.dw_finalize = env.finalize  # type: ignore[attr-defined]
    env.finalize = _finalize_output
    for name, func in list(env.filters.items()):
        if not getattr(func, "dw_budgeted", False):
            env.filters[name] = _budgeted_filter(name, func)


def _getattr(env: SandboxedEnvironment, obj: Any, attribute: str) -> Any:
    """``a.b`` on an object reads its key ``b`` first, so JSON keys named like dict
    methods (``items``, ``keys``, ``values``, ``get``...) are data, as users expect."""
    current_budget().spend()
    if isinstance(obj, Mapping):
        try:
            return obj[attribute]
        except (KeyError, TypeError):
            pass
    return SandboxedEnvironment.getattr(env, obj, attribute)


def _getitem(env: SandboxedEnvironment, obj: Any, argument: Any) -> Any:
    budget = current_budget()
    budget.spend()
    result = SandboxedEnvironment.getitem(env, obj, argument)
    if isinstance(argument, slice):
        budget.spend(0, _length(result))
    return result


def _call(env: SandboxedEnvironment, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
    budget = current_budget()
    budget.spend()
    if isinstance(obj, LoopContext) and args:  # a recursive loop's next level
        args = (_iterate(args[0]), *args[1:])
    elif obj is generate_lorem_ipsum:
        _check_room(budget, "lipsum", [n * 100 for n in args[:1] if type(n) is int])
    # str.format comes wrapped by the sandbox (``__wrapped__`` is the bound method)
    method = getattr(obj, "__wrapped__", obj)
    owner = getattr(method, "__self__", None)
    if isinstance(owner, str | list | tuple | dict) and not isinstance(obj, type):
        name = getattr(method, "__name__", "")
        budget.spend(_length(owner) // 64 + sum(_length(a) for a in args) // 64)
        _check_room(budget, f"method {name!r}", (*args, *kwargs.values()))
        if isinstance(owner, str) and name in ("format", "format_map"):
            _check_format(budget, owner)
        elif isinstance(owner, str) and name == "replace" and len(args) >= 2:
            _check_replace(budget, owner, args[0], args[1])
    result = SandboxedEnvironment.call(env, context, obj, *args, **kwargs)
    budget.spend(0, _length(result) if isinstance(result, str | list | tuple) else 0)
    return result


def _call_binop(
    env: SandboxedEnvironment, context: Any, operator: str, left: Any, right: Any
) -> Any:
    budget = current_budget()
    budget.spend()
    if operator == "*":
        size = _repeat_size(left, right)
        if size is not None:
            if size > MAX_REPEAT:
                raise jinja2.exceptions.SecurityError(
                    f"'*' would build more than {MAX_REPEAT} characters or items"
                )
            budget.spend(0, size)
    elif operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            budget.spend(0, len(left) + len(right))
    elif operator == "%":
        if isinstance(left, str):
            _check_format(budget, left, right if isinstance(right, tuple) else (right,))
    elif (
        operator == "**"
        and isinstance(left, int | float)
        and isinstance(right, int | float)
        and abs(left) > 1
    ):
        if abs(right) > MAX_EXPONENT:
            raise jinja2.exceptions.SecurityError(f"'**' exponents are limited to {MAX_EXPONENT}")
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left).bit_length() * right > MAX_POWER_BITS:
                raise jinja2.exceptions.SecurityError(
                    f"'**' would build a number of more than {MAX_POWER_BITS} bits"
                )
    result = SandboxedEnvironment.call_binop(env, context, operator, left, right)
    if operator == "%" and isinstance(result, str):
        budget.spend(0, len(result))
    return result
