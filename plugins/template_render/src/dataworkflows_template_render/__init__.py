"""``core.template.render``: renders a stored document template; the output is the document.

Entry point only: the hooks import :mod:`dataworkflows_template_render.action` (pydantic
models) when the kernel asks for the types.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_template_render.action")

#: ctx.render_document came with plugin API 1.2
dataworkflows_api = ">=1.2,<2"
dataworkflows_actions = {"core.template.render": "Render a document template"}
dataworkflows_triggers = {}


@hookimpl
def register_actions(register: Any) -> None:
    from dataworkflows_template_render.action import RenderTemplate

    register(RenderTemplate)
