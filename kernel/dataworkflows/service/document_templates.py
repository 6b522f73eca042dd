"""Document template sets (docs/templates.md): versioned Jinja2 templates of a tenant,
their preview, and what ``ctx.render_document`` gives actions.

A set holds named templates (``text``, ``markdown``, ``html``) and sample data; every
change adds a version holding the whole set. Templates are checked when saved (syntax,
dunder reads, loops that must overrun the budget: 422 ``invalid_template_set`` with every
problem) and rendered by :class:`~dataworkflows.engine.documents.DocumentRenderer`, the
same for the preview route and for actions, so the same data gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from dataworkflows.actions import ActionError, Documents, RenderedDocument
from dataworkflows.common.clock import Clock, iso_utc
from dataworkflows.common.errors import ApiError, Conflict, NotFound, Unprocessable
from dataworkflows.common.pagination import DEFAULT_LIMIT, PageRequest, page
from dataworkflows.db.database import Database
from dataworkflows.db.template_models import document_template_sets as sets
from dataworkflows.db.template_models import document_template_versions as versions
from dataworkflows.engine.definitions import ID_PATTERN, checksum
from dataworkflows.engine.documents import DocumentRenderer
from dataworkflows.service.template_bodies import (
    RenderRequest,
    TemplateSetRequest,
    TemplateSetVersionRequest,
    parse_body,
)

_NAME = re.compile(ID_PATTERN)


class DocumentTemplateService:
    """CRUD, preview and rendering of document template sets, scoped by tenant."""

    def __init__(self, db: Database, clock: Clock, renderer: DocumentRenderer) -> None:
        self.db = db
        self.clock = clock
        self.renderer = renderer

    # -- writing ----------------------------------------------------------------------------

    def _checked(self, body: TemplateSetVersionRequest) -> dict[str, Any]:
        """The set's stored content; a 422 listing every problem of every template."""
        problems: list[dict[str, str]] = []
        templates: dict[str, Any] = {}
        for name, template in body.templates.items():
            path = f"$.templates.{name}"
            if not _NAME.match(name):
                problems.append(
                    {
                        "path": path,
                        "code": "invalid_name",
                        "message": "a template name is 1-200 letters, digits, '.', '_' or '-'",
                    }
                )
            problems += self.renderer.check(template.source, template.format, f"{path}.source")
            templates[name] = template.model_dump(by_alias=True, exclude_none=True)
        if problems:
            raise Unprocessable(
                f"the template set has {len(problems)} problem(s)",
                code="invalid_template_set",
                details={"problems": problems},
            )
        return {"templates": templates, "sample_data": body.sample_data}

    async def create(
        self, raw: Any, *, tenant_id: str = "default", actor: str | None = None
    ) -> dict[str, Any]:
        """Create a template set at version 1; 409 ``template_set_exists`` if the tenant
        has one with that id."""
        body = parse_body(TemplateSetRequest, raw, "invalid_template_set", "template set")
        content = self._checked(body)
        now = self.clock.now()
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    sets.insert().values(
                        tenant_id=tenant_id,
                        id=body.id,
                        display_name=body.display_name or body.id,
                        description=body.description,
                        latest_version=1,
                        created_at=now,
                        updated_at=now,
                        created_by=actor,
                    )
                )
                await conn.execute(
                    versions.insert().values(
                        _version_row(tenant_id, body.id, 1, content, now, actor)
                    )
                )
        except IntegrityError:
            raise Conflict(
                f"a template set with id {body.id!r} already exists; add a version to it",
                code="template_set_exists",
                details={"templateSet": body.id},
            ) from None
        return await self.get(body.id, tenant_id=tenant_id)

    async def add_version(
        self, set_id: str, raw: Any, *, tenant_id: str = "default", actor: str | None = None
    ) -> dict[str, Any]:
        """Add version n+1 holding the whole set; 409 ``duplicate_version`` if it equals
        the latest version."""
        body = parse_body(
            TemplateSetVersionRequest, raw, "invalid_template_set", "template set version"
        )
        content = self._checked(body)
        now = self.clock.now()
        async with self.db.begin() as conn:
            row = await self._set_row(conn, set_id, tenant_id, lock=True)
            latest = row["latest_version"]
            stored = await self._version_row(conn, set_id, tenant_id, latest)
            if stored["checksum"] == _checksum(content):
                raise Conflict(
                    f"version {latest} of template set {set_id!r} is identical",
                    code="duplicate_version",
                    details={"templateSet": set_id, "version": latest},
                )
            values: dict[str, Any] = {"latest_version": latest + 1, "updated_at": now}
            if body.display_name is not None:
                values["display_name"] = body.display_name
            if body.description is not None:
                values["description"] = body.description
            await conn.execute(
                update(sets)
                .where(sets.c.tenant_id == tenant_id, sets.c.id == set_id)
                .values(**values)
            )
            await conn.execute(
                versions.insert().values(
                    _version_row(tenant_id, set_id, latest + 1, content, now, actor)
                )
            )
        return await self.get(set_id, tenant_id=tenant_id)

    async def delete(self, set_id: str, *, tenant_id: str = "default") -> None:
        """Delete a set with every version (workflows naming it fail when they render)."""
        async with self.db.begin() as conn:
            await self._set_row(conn, set_id, tenant_id)
            await conn.execute(
                delete(versions).where(
                    versions.c.tenant_id == tenant_id, versions.c.set_id == set_id
                )
            )
            await conn.execute(
                delete(sets).where(sets.c.tenant_id == tenant_id, sets.c.id == set_id)
            )

    # -- reading ----------------------------------------------------------------------------

    async def list(
        self, *, tenant_id: str = "default", page_request: PageRequest | None = None
    ) -> dict[str, Any]:
        """A page of the tenant's sets (by id), without their sources."""
        return await tenant_page(self.db, sets, "templates", tenant_id, page_request, _summary)

    async def get(
        self, set_id: str, *, tenant_id: str = "default", version: int | None = None
    ) -> dict[str, Any]:
        """A set with one version's templates and sample data (default: the latest)."""
        async with self.db.connect() as conn:
            row = await self._set_row(conn, set_id, tenant_id)
            stored = await self._version_row(
                conn, set_id, tenant_id, version or row["latest_version"]
            )
        return {
            **_summary(row),
            "version": stored["version"],
            "templates": stored["templates"],
            "sampleData": stored["sample_data"],
            "checksum": stored["checksum"],
            "versionCreatedAt": iso_utc(stored["created_at"]),
            "versionCreatedBy": stored["created_by"],
        }

    async def _set_row(self, conn: Any, set_id: str, tenant_id: str, *, lock: bool = False) -> Any:
        query = select(sets).where(sets.c.tenant_id == tenant_id, sets.c.id == set_id)
        if lock and not self.db.is_sqlite:
            query = query.with_for_update()
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound(
                f"there is no template set {set_id!r}",
                code="template_set_not_found",
                details={"templateSet": set_id},
            )
        return row

    async def _version_row(self, conn: Any, set_id: str, tenant_id: str, version: int) -> Any:
        query = select(versions).where(
            versions.c.tenant_id == tenant_id,
            versions.c.set_id == set_id,
            versions.c.version == version,
        )
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound(
                f"template set {set_id!r} has no version {version}",
                code="version_not_found",
                details={"templateSet": set_id, "version": version},
            )
        return row

    # -- rendering --------------------------------------------------------------------------

    async def preview(self, set_id: str, raw: Any, *, tenant_id: str = "default") -> dict[str, Any]:
        """``POST /api/v1/templates/{id}/render``: one template rendered with the request's
        data, else the version's sample data."""
        body = parse_body(RenderRequest, raw, "invalid_render_request", "render request")
        document = await self.render_document(
            set_id, body.template, body.data, tenant_id=tenant_id, version=body.version
        )
        return document.as_outputs()

    async def render_document(
        self,
        set_id: str,
        template: str,
        data: Mapping[str, Any] | None,
        *,
        tenant_id: str = "default",
        version: int | None = None,
    ) -> RenderedDocument:
        """Render a stored template (``data`` None: the version's sample data); raises
        :class:`NotFound` or :class:`~dataworkflows.engine.documents.DocumentError`."""
        async with self.db.connect() as conn:
            row = await self._set_row(conn, set_id, tenant_id)
            stored = await self._version_row(
                conn, set_id, tenant_id, version or row["latest_version"]
            )
        found = stored["templates"].get(template)
        if found is None:
            raise NotFound(
                f"template set {set_id!r} (version {stored['version']}) has no template "
                f"{template!r}",
                code="template_not_found",
                details={
                    "templateSet": set_id,
                    "version": stored["version"],
                    "templates": sorted(stored["templates"]),
                },
            )
        return await self.renderer.render(
            template_set=set_id,
            template=template,
            version=stored["version"],
            fmt=found["format"],
            source=found["source"],
            data=stored["sample_data"] if data is None else data,
        )

    def for_tenant(self, tenant_id: str) -> Documents:
        """What ``ctx.documents`` is for a run of ``tenant_id``."""
        return _TenantDocuments(self, tenant_id)


class _TenantDocuments(Documents):
    """:class:`~dataworkflows.actions.Documents` of one tenant: errors as permanent
    :class:`ActionError` with the preview's codes."""

    def __init__(self, service: DocumentTemplateService, tenant_id: str) -> None:
        self._service = service
        self._tenant_id = tenant_id

    async def render(
        self,
        template_set: str,
        template: str,
        data: Mapping[str, Any] | None,
        *,
        version: int | None = None,
    ) -> RenderedDocument:
        try:
            return await self._service.render_document(
                template_set, template, data, tenant_id=self._tenant_id, version=version
            )
        except ApiError as exc:
            if exc.code == "template_set_not_found":
                exc.code = "template_not_found"
            raise ActionError(exc.message, code=exc.code, details=exc.details) from None


async def tenant_page(
    db: Database,
    table: Any,
    kind: str,
    tenant_id: str,
    page_request: PageRequest | None,
    view: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """A page of a tenant's rows of ``table`` ordered by ``id`` (keyset on the id)."""
    request = page_request or PageRequest(DEFAULT_LIMIT, None)
    query = select(table).where(table.c.tenant_id == tenant_id)
    if request.after is not None:
        query = query.where(table.c.id > request.after[0])
    query = query.order_by(table.c.id).limit(request.limit + 1)
    async with db.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    return page(kind, rows, request, lambda r: (r["id"],), view)


def _checksum(content: dict[str, Any]) -> str:
    return checksum({"templates": content["templates"], "sampleData": content["sample_data"]})


def _version_row(
    tenant_id: str, set_id: str, version: int, content: dict[str, Any], now: Any, actor: str | None
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "set_id": set_id,
        "version": version,
        "templates": content["templates"],
        "sample_data": content["sample_data"],
        "checksum": _checksum(content),
        "created_at": now,
        "created_by": actor,
    }


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "displayName": row["display_name"],
        "description": row["description"],
        "latestVersion": row["latest_version"],
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
        "createdBy": row["created_by"],
    }
