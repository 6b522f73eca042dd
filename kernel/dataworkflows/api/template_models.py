"""The template API's answers as pydantic models (docs/templates.md): what
``service/document_templates.py`` and ``service/workflow_templates.py`` return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from dataworkflows.api.models import ApiModel, omittable, page_of
from dataworkflows.common.pagination import MAX_INT
from dataworkflows.service.template_bodies import DocumentFormat

Json = dict[str, Any]


class TemplateSetSummary(ApiModel):
    """A document template set, without its templates."""

    id: str
    display_name: str
    description: str | None
    latest_version: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class TemplateSetQuery(ApiModel):
    """Which version to read."""

    version: int = omittable(ge=1, le=MAX_INT, description="Default: the latest version.")


class StoredTemplate(BaseModel):
    """One template of a set as stored."""

    format: DocumentFormat
    source: str
    description: str | None = None


class TemplateSet(TemplateSetSummary):
    """A template set with one version's templates and sample data."""

    version: int
    templates: dict[str, StoredTemplate]
    sample_data: Json
    checksum: str = Field(description="SHA-256 of the version's templates and sample data")
    version_created_at: datetime
    version_created_by: str | None


TemplateSetPage = page_of(TemplateSetSummary, "TemplateSetPage")


class RenderedDocumentView(ApiModel):
    """A rendered document: the preview's answer, and the outputs of ``core.template.render``."""

    document: str
    format: DocumentFormat
    content_type: str
    template_set: str
    template: str
    version: int
    bytes: int = Field(description="Length of the document in UTF-8")
    sha256: str = Field(description="SHA-256 of the document in UTF-8")


class WorkflowTemplate(ApiModel):
    """A workflow template."""

    id: str
    display_name: str
    description: str | None
    config_schema: Json
    definition: Json
    created_at: datetime
    updated_at: datetime
    created_by: str | None


WorkflowTemplatePage = page_of(WorkflowTemplate, "WorkflowTemplatePage")
