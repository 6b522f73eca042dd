"""``core.template.render``: render a document template stored in the kernel
(``POST /api/v1/templates``) with data from the run; the step's outputs are the document.

It reaches the template only through ``ctx.render_document`` (plugin API 1.2), so it
renders exactly as the preview ``POST /api/v1/templates/{id}/render`` does: the same data
gives the same bytes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dataworkflows import Action, ActionContext, ActionError, ActionResult


class RenderTemplate(Action):
    type = "core.template.render"
    title = "Render a document template"

    class Params(BaseModel):
        """Render template ``template`` of template set ``templateSet`` with ``data``.
        Outputs: ``document`` (the text), ``format``, ``contentType``, ``templateSet``,
        ``template``, ``version``, ``bytes`` and ``sha256``."""

        model_config = ConfigDict(
            extra="forbid", populate_by_name=True, use_attribute_docstrings=True
        )

        template_set: str = Field(alias="templateSet", min_length=1, max_length=200)
        """Id of the template set (of the run's tenant)."""
        template: str = Field(min_length=1, max_length=200)
        """Name of the template in the set."""
        data: dict[str, Any] | None = None
        """The template's variables (templates allowed, e.g. ``"{{ trigger }}"``).
        Default: the set's sample data."""
        version: int | None = Field(default=None, ge=1)
        """Version of the set to render. Default: its latest version when the step runs."""

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        try:
            document = await ctx.render_document(
                params.template_set, params.template, params.data, version=params.version
            )
        except ActionError as exc:
            return exc.to_result()
        ctx.log.info(
            "rendered %s/%s v%s: %d bytes",
            document.template_set,
            document.template,
            document.version,
            document.bytes,
        )
        return ActionResult.succeeded(document.as_outputs())
