"""The hook reference, ``docs/hooks.md``, generated from :mod:`dataworkflows.hookspecs`.

``python -m dataworkflows.plugins.hookdoc > docs/hooks.md`` writes it; a test compares the
file with :func:`render` and fails when someone changed a hookspec and not the page.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from dataworkflows import hookspecs

#: the sections every hookspec's docstring has, in order
SECTIONS = ("Called when:", "Args:", "Returns:", "Since:")
#: a reST role: :class:`~a.B` (shown as B), :meth:`text <target>` (shown as text)
_ARG = re.compile(r"^(\w+) -- ")
_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc):`(~?)([^`<]*?)\s*(?:<[^>]*>)?`")


def hookspec_functions(module: ModuleType = hookspecs) -> dict[str, Callable[..., Any]]:
    """Every hookspec of ``module`` (functions marked by ``@hookspec``), by name, in the
    order of the source."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: fn
        for name, fn in vars(module).items()
        if inspect.isfunction(fn) and hasattr(fn, marker)
    }


def signature(fn: Callable[..., Any]) -> str:
    """``def name(arg: annotation, ...) -> annotation`` as written in the source (the
    annotations are strings: the module uses ``from __future__ import annotations``)."""
    sig = inspect.signature(fn)
    params = ", ".join(
        f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
        for p in sig.parameters.values()
    )
    returns = "" if sig.return_annotation is sig.empty else f" -> {sig.return_annotation}"
    return f"def {fn.__name__}({params}){returns}"


def _inline(text: str) -> str:
    """reST roles and literals as Markdown code spans."""

    def role(match: re.Match[str]) -> str:
        shown = match.group(2)
        return f"`{shown.rsplit('.', 1)[-1] if match.group(1) else shown}`"

    return _ROLE.sub(role, text).replace("``", "`")


def _markdown(doc: str) -> str:
    """A hookspec docstring as Markdown: one paragraph per section, the section labels in
    bold, and each argument of ``Args:`` (``name -- text``) an item of a list."""
    blocks: list[list[str]] = []
    for raw in doc.splitlines():
        line = raw.strip()
        if not line:
            blocks.append([])
        elif line.startswith(SECTIONS) or not blocks:
            blocks.append([line])
        elif blocks[-1] and blocks[-1][0].startswith("Args:") and _ARG.match(line):
            blocks.append([f"Args: {line}"])  # the next argument of the same section
        else:
            blocks[-1].append(line)
    out: list[str] = []
    for block in filter(None, blocks):
        text = _inline(" ".join(block))
        arg = _ARG.match(text.removeprefix("Args: "))
        if text.startswith("Args: ") and arg:
            item = f"- `{arg.group(1)}`: {text.removeprefix('Args: ')[arg.end() :]}"
            if not (out and out[-1].startswith("- ")):
                out.append("**Args:**")
            out.append(item)
            continue
        for section in SECTIONS:
            if text.startswith(section):
                text = f"**{section}**{text[len(section) :]}"
        out.append(text)
    joined = out[:1]
    for item in out[1:]:  # a list item follows its heading or item directly
        joined.append(("\n" if item.startswith("- ") else "\n\n") + item)
    return "".join(joined)


def _flags(fn: Callable[..., Any]) -> list[str]:
    options = getattr(fn, f"{hookspecs.PROJECT_NAME}_spec", {})
    flags = []
    if options.get("firstresult"):
        flags.append("*first result*: the first implementation that returns non-None wins")
    if options.get("historic"):
        flags.append("*historic*: plugins registered later are called too")
    warning = options.get("warn_on_impl")
    if warning is not None:
        flags.append(f"**deprecated**: {warning}")
    return flags


def render(module: ModuleType = hookspecs) -> str:
    """The Markdown reference page of every hook in ``module``."""
    specs = hookspec_functions(module)
    lines = [
        "# Hook reference",
        "",
        "<!-- Generated from kernel/dataworkflows/hookspecs.py by "
        "`python -m dataworkflows.plugins.hookdoc > docs/hooks.md`; do not edit. -->",
        "",
        f"Plugin API version **{hookspecs.PLUGIN_API_VERSION}**. A plugin implements a hook "
        "with a function of the same name decorated by `@hookimpl` "
        "(`from dataworkflows import hookimpl`); it may accept any subset of the arguments. "
        "How to write, declare and check a plugin: the README's "
        '["Writing a plugin"](../README.md#writing-a-plugin).',
        "",
        "| hook | summary |",
        "|---|---|",
    ]
    for name, fn in specs.items():
        summary = _inline((inspect.getdoc(fn) or "").split("\n", 1)[0])
        lines.append(f"| [`{name}`](#{name}) | {summary} |")
    for name, fn in specs.items():
        lines += ["", f"## {name}", "", "```python", signature(fn), "```", ""]
        lines += [f"> {flag}" for flag in _flags(fn)]
        if _flags(fn):
            lines.append("")
        lines.append(_markdown(inspect.getdoc(fn) or "").rstrip())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
