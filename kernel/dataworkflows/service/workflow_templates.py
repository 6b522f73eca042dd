"""Workflow templates (docs/templates.md): a parameterised workflow definition plus the
JSON Schema of its configuration, per tenant.

``instantiate`` checks a configuration against the schema (422 ``invalid_config`` listing
every problem), fills the definition (:mod:`.template_config`) and creates a Draft
workflow through :meth:`WorkflowService.create_workflow` — the path of
``POST /api/v1/workflows``: the definition is validated the same way, version 1 is written
with its audit row (note: which template and configuration made it).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from dataworkflows.common.clock import Clock, iso_utc
from dataworkflows.common.errors import Conflict, NotFound, Unprocessable
from dataworkflows.common.pagination import PageRequest
from dataworkflows.db.database import Database
from dataworkflows.db.template_models import workflow_templates as table
from dataworkflows.service.document_templates import tenant_page
from dataworkflows.service.template_bodies import (
    InstantiateRequest,
    WorkflowTemplateRequest,
    parse_body,
)
from dataworkflows.service.template_config import (
    config_problems,
    fill,
    placeholder_problems,
    schema_problems,
    with_defaults,
)
from dataworkflows.service.workflows import WorkflowService


class WorkflowTemplateService:
    """CRUD of workflow templates and their instantiation, scoped by tenant."""

    def __init__(self, db: Database, clock: Clock, workflows: WorkflowService) -> None:
        self.db = db
        self.clock = clock
        self.workflows = workflows

    def _checked(self, raw: Any) -> WorkflowTemplateRequest:
        body = parse_body(WorkflowTemplateRequest, raw, "invalid_workflow_template", "template")
        problems = schema_problems(body.config_schema) + placeholder_problems(body.definition)
        if problems:
            raise Unprocessable(
                f"the workflow template has {len(problems)} problem(s)",
                code="invalid_workflow_template",
                details={"problems": problems},
            )
        return body

    async def create(
        self, raw: Any, *, tenant_id: str = "default", actor: str | None = None
    ) -> dict[str, Any]:
        """Store a new template; 409 ``workflow_template_exists`` if the id is taken."""
        body = self._checked(raw)
        now = self.clock.now()
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    table.insert().values(
                        tenant_id=tenant_id,
                        id=body.id,
                        display_name=body.display_name or body.id,
                        description=body.description,
                        config_schema=body.config_schema,
                        definition=body.definition,
                        created_at=now,
                        updated_at=now,
                        created_by=actor,
                    )
                )
        except IntegrityError:
            raise Conflict(
                f"a workflow template with id {body.id!r} already exists",
                code="workflow_template_exists",
                details={"workflowTemplate": body.id},
            ) from None
        return await self.get(body.id, tenant_id=tenant_id)

    async def replace(
        self, template_id: str, raw: Any, *, tenant_id: str = "default"
    ) -> dict[str, Any]:
        """Replace a template's content (workflows made from it keep theirs)."""
        body = self._checked(raw)
        if body.id != template_id:
            raise Unprocessable(
                f"the body's id {body.id!r} does not match template {template_id!r}",
                code="invalid_workflow_template",
                details={
                    "problems": [
                        {
                            "path": "$.id",
                            "code": "id_mismatch",
                            "message": f"expected {template_id!r}",
                        }
                    ]
                },
            )
        async with self.db.begin() as conn:
            await self._row(conn, template_id, tenant_id)
            await conn.execute(
                update(table)
                .where(table.c.tenant_id == tenant_id, table.c.id == template_id)
                .values(
                    display_name=body.display_name or body.id,
                    description=body.description,
                    config_schema=body.config_schema,
                    definition=body.definition,
                    updated_at=self.clock.now(),
                )
            )
        return await self.get(template_id, tenant_id=tenant_id)

    async def delete(self, template_id: str, *, tenant_id: str = "default") -> None:
        """Delete a template (workflows made from it stay)."""
        async with self.db.begin() as conn:
            await self._row(conn, template_id, tenant_id)
            await conn.execute(
                delete(table).where(table.c.tenant_id == tenant_id, table.c.id == template_id)
            )

    async def list(
        self, *, tenant_id: str = "default", page_request: PageRequest | None = None
    ) -> dict[str, Any]:
        """A page of the tenant's templates (by id), each with its schema and definition."""
        return await tenant_page(
            self.db, table, "workflowTemplates", tenant_id, page_request, _view
        )

    async def get(self, template_id: str, *, tenant_id: str = "default") -> dict[str, Any]:
        """One template."""
        async with self.db.connect() as conn:
            return _view(await self._row(conn, template_id, tenant_id))

    async def _row(self, conn: Any, template_id: str, tenant_id: str) -> Any:
        query = select(table).where(table.c.tenant_id == tenant_id, table.c.id == template_id)
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound(
                f"there is no workflow template {template_id!r}",
                code="workflow_template_not_found",
                details={"workflowTemplate": template_id},
            )
        return row

    async def instantiate(
        self,
        template_id: str,
        raw: Any,
        *,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Create a Draft workflow (version 1, audit row) from the template and ``config``;
        422 ``invalid_config`` listing every problem, else ``invalid_definition`` as
        ``POST /api/v1/workflows`` answers. Nothing is written on an error."""
        body = parse_body(InstantiateRequest, raw, "invalid_config", "request")
        template = await self.get(template_id, tenant_id=tenant_id)
        schema = template["configSchema"]
        config = with_defaults(schema, body.config)
        problems = config_problems(schema, config)
        definition: dict[str, Any] = {}
        if not problems:
            definition = fill(template["definition"], config, problems, "$.definition")
        if problems:
            raise Unprocessable(
                f"the configuration has {len(problems)} problem(s)",
                code="invalid_config",
                details={"problems": problems, "workflowTemplate": template_id},
            )
        definition["id"] = body.workflow_id or f"{template_id[:191]}-{uuid.uuid4().hex[:8]}"
        if body.display_name is not None:
            definition["displayName"] = body.display_name
        return await self.workflows.create_workflow(
            definition,
            tenant_id=tenant_id,
            actor=actor,
            note=body.note or note or f"instantiated from workflow template {template_id!r}",
        )


def _view(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "displayName": row["display_name"],
        "description": row["description"],
        "configSchema": row["config_schema"],
        "definition": row["definition"],
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
        "createdBy": row["created_by"],
    }
