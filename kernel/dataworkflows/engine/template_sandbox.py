"""The sandbox that makes templates spend their budget
(:class:`~dataworkflows.engine.template_budget.Budget`): a code generator that charges
loops and ``~``, and sandbox hooks that charge calls, attribute and item reads, filters,
operators and string building, and refuse size arguments larger than what may still be
built. :func:`_harden` installs them on an environment
(:mod:`dataworkflows.engine.templating` does, before compiling anything).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import nodes as ast
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from dataworkflows.engine.template_budget import MAX_REPEAT, Budget, current_budget, repeat_size

#: the largest exponent ``**`` accepts
MAX_EXPONENT = 4096
#: the most bits an integer ``**`` may produce
MAX_POWER_BITS = 64 * 1024
_PRINTF_WIDTH = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_DIGITS = re.compile(r"\d+")


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
        size = repeat_size(left, right)
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
