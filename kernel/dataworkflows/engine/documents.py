"""Rendering document templates (docs/templates.md) in the kernel's hardened sandbox.

One :class:`DocumentRenderer` serves the preview route and ``ctx.render_document`` (the
``core.template.render`` action), so the same template and data give the same bytes.

* Formats: ``text``, ``markdown`` (no escaping) and ``html`` (autoescaped: ``<`` in the
  data becomes ``&lt;``; mark trusted HTML with ``|safe``).
* Jinja2's ``SandboxedEnvironment``, hardened like parameter templates
  (:func:`~dataworkflows.engine.template_sandbox._harden`): every loop, call, read and
  string built spends the evaluation's :class:`~dataworkflows.engine.template_budget.Budget`
  (``DATAWORKFLOWS_TEMPLATE_*``: operations, characters built, seconds); undefined names are
  errors (``StrictUndefined``); dunder names (``''.__class__``) are refused when a template
  is saved, and every unsafe attribute by the sandbox when it renders.
* The rendered document may have at most ``DATAWORKFLOWS_DOCUMENT_MAX_BYTES`` UTF-8 bytes.
* Rendering runs in a thread (``asyncio.to_thread``), so the event loop goes on while a
  long document renders; the budget's clock stops it at the time limit.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import nodes as ast
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import LRUCache

from dataworkflows.actions import RenderedDocument
from dataworkflows.common.errors import Unprocessable
from dataworkflows.engine.template_budget import (
    Budget,
    BudgetExceeded,
    TemplateLimits,
    _static_overrun,
    spending,
)
from dataworkflows.engine.template_sandbox import _harden
from dataworkflows.engine.templating import undefined_message

#: format → media type of the rendered document
FORMATS = {
    "text": "text/plain; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


class DocumentError(Unprocessable):
    """A template that cannot be rendered with this data (a 422 with a specific code):
    ``template_undefined``, ``template_refused``, ``template_budget_exceeded``,
    ``document_too_large`` or ``template_error``."""


class DocumentRenderer:
    """Checks and renders document templates; one sandbox per format."""

    def __init__(
        self,
        limits: TemplateLimits | None = None,
        *,
        max_bytes: int = 1_000_000,
        prepare: Callable[[jinja2.Environment], None] | None = None,
    ) -> None:
        """``prepare(env)`` adds filters and globals (the plugins'
        ``prepare_jinja2_environment``) before the sandbox is hardened."""
        self.limits = limits or TemplateLimits()
        self.max_bytes = max_bytes
        self._envs: dict[str, SandboxedEnvironment] = {}
        #: compiled templates by (format, source); LRUCache is thread-safe
        self._compiled: LRUCache = LRUCache(max(1, self.limits.cache_size))
        for fmt in FORMATS:
            env = SandboxedEnvironment(
                undefined=jinja2.StrictUndefined,
                autoescape=fmt == "html",
                keep_trailing_newline=True,
            )
            if prepare is not None:
                prepare(env)
            _harden(env)
            self._envs[fmt] = env

    def check(self, source: str, fmt: str, path: str) -> list[dict[str, str]]:
        """Problems of one template, found without running it: syntax errors, reads of
        dunder names (``__class__``) the sandbox would refuse, loops that must overrun
        the budget."""
        env = self._envs[fmt]
        try:
            tree = env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            where = f" (line {exc.lineno})" if exc.lineno else ""
            return [_problem(path, "template_syntax", f"template syntax error{where}: {exc}")]
        except RecursionError:
            return [_problem(path, "template_syntax", "template syntax error: nested too deeply")]
        problems = [
            _problem(
                path,
                "unsafe_template",
                f"the sandbox refuses {name!r}: dunder attributes are not readable in templates",
            )
            for name in sorted(_private_names(tree))
        ]
        overrun = _static_overrun(tree, self.limits)
        if overrun is not None:
            problems.append(_problem(path, "template_budget_exceeded", overrun))
        return problems

    def render_text(self, source: str, fmt: str, data: Mapping[str, Any]) -> str:
        """Render here and now (blocking) under a fresh budget; raises :class:`DocumentError`."""
        with spending(Budget(self.limits)):
            try:
                compiled = self._compiled.get((fmt, source))
                if compiled is None:
                    compiled = self._envs[fmt].from_string(source)
                    self._compiled[(fmt, source)] = compiled
                return compiled.render(dict(data))
            except jinja2.exceptions.SecurityError as exc:
                raise DocumentError(
                    f"refused by the sandbox: {exc}", code="template_refused"
                ) from None
            except jinja2.UndefinedError as exc:
                raise DocumentError(
                    f"undefined: {undefined_message(exc.message)}", code="template_undefined"
                ) from None
            except BudgetExceeded as exc:
                raise DocumentError(str(exc), code="template_budget_exceeded") from None
            except (RecursionError, MemoryError) as exc:
                raise DocumentError(
                    f"over its budget: {type(exc).__name__}", code="template_budget_exceeded"
                ) from None
            except jinja2.TemplateError as exc:
                raise DocumentError(f"template error: {exc}", code="template_error") from None
            except Exception as exc:  # raised inside expressions: 1/0, bad filter arguments
                raise DocumentError(f"{type(exc).__name__}: {exc}", code="template_error") from None

    async def render(
        self,
        *,
        template_set: str,
        template: str,
        version: int,
        fmt: str,
        source: str,
        data: Mapping[str, Any],
    ) -> RenderedDocument:
        """Render one stored template off the event loop; the size cap is checked on the
        UTF-8 bytes. Raises :class:`DocumentError` (details name the template)."""
        where = {"templateSet": template_set, "template": template, "version": version}
        try:
            text = await asyncio.to_thread(self.render_text, source, fmt, data)
        except DocumentError as exc:
            raise DocumentError(exc.message, code=exc.code, details=where) from None
        encoded = text.encode("utf-8")
        if len(encoded) > self.max_bytes:
            raise DocumentError(
                f"the document has {len(encoded)} bytes; the limit is {self.max_bytes} "
                "(DATAWORKFLOWS_DOCUMENT_MAX_BYTES)",
                code="document_too_large",
                details={**where, "bytes": len(encoded), "maxBytes": self.max_bytes},
            )
        return RenderedDocument(
            content=text,
            format=fmt,
            content_type=FORMATS[fmt],
            template_set=template_set,
            template=template,
            version=version,
            bytes=len(encoded),
            sha256=hashlib.sha256(encoded).hexdigest(),
        )


def _problem(path: str, code: str, message: str) -> dict[str, str]:
    return {"path": path, "code": code, "message": message}


def _private_names(tree: ast.Template) -> set[str]:
    """Dunder names read as attributes (``x.__class__``, ``x|attr('__class__')``,
    ``x['__class__']``): never data, always an attempt to leave the sandbox."""
    names = {node.attr for node in tree.find_all(ast.Getattr) if node.attr.startswith("__")}
    consts = [item.arg for item in tree.find_all(ast.Getitem)]
    consts += [arg for f in tree.find_all(ast.Filter) if f.name == "attr" for arg in f.args]
    names.update(
        c.value for c in consts if isinstance(c, ast.Const) and str(c.value).startswith("__")
    )
    return names
