"""What the template routes accept (docs/templates.md), as pydantic models: checked by the
template services, published in the OpenAPI document by the routes."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from dataworkflows.common.errors import Unprocessable
from dataworkflows.common.validation_messages import friendly_errors, json_path
from dataworkflows.engine.definitions import ID_PATTERN

Json = dict[str, Any]
DocumentFormat = Literal["text", "markdown", "html"]
M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class DocumentTemplate(_Body):
    """One template of a set."""

    format: DocumentFormat = "text"
    source: str = Field(max_length=1_000_000, description="Jinja2 source")
    description: str | None = None


class TemplateSetVersionRequest(_Body):
    """A new version of a template set: every template it holds, and sample data."""

    templates: dict[str, DocumentTemplate] = Field(
        min_length=1, description="Template name (an id: letters, digits, '._-') → template"
    )
    sample_data: Json = Field(default_factory=dict, description="Data the preview uses by default")
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None


class TemplateSetRequest(TemplateSetVersionRequest):
    """A new template set (version 1)."""

    kind: Literal["documentTemplateSet"] | None = Field(
        default=None, description="Names the kind of a template file (fixtures/); not stored"
    )
    id: str = Field(pattern=ID_PATTERN)


class RenderRequest(_Body):
    """Preview one template of a set with data (default: the version's sample data)."""

    template: str
    data: Json | None = None
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class WorkflowTemplateRequest(_Body):
    """A workflow template: a parameterised definition plus its configuration's JSON Schema."""

    kind: Literal["workflowTemplate"] | None = Field(
        default=None, description="Names the kind of a template file (fixtures/); not stored"
    )
    id: str = Field(pattern=ID_PATTERN)
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    config_schema: Json = Field(description="JSON Schema (2020-12) of the configuration")
    definition: Json = Field(
        description='A workflow definition; {"$config": "a.b"} values and "${a.b}" string '
        "parts are filled from the configuration"
    )


class InstantiateRequest(_Body):
    """Create a Draft workflow from a template."""

    config: Json = Field(default_factory=dict)
    workflow_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Default: <template id>-<8 hex digits>"
    )
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    note: str | None = None


def parse_body(model: type[M], raw: Any, code: str, what: str) -> M:
    """``raw`` as a ``model``; a 422 ``code`` listing every problem otherwise."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = [
            {"path": json_path(loc), "code": kind, "message": message}
            for loc, message, kind in friendly_errors(exc, model)
        ]
        raise Unprocessable(
            f"the {what} has {len(problems)} problem(s)",
            code=code,
            details={"problems": problems},
        ) from None
