"""Credentials (write-only secrets) and the resource links of a run.

    POST   /api/v1/credentials                   {name, secret, description?, allowedHosts?}
    GET    /api/v1/credentials                   the tenant's credentials, never secrets
    GET    /api/v1/credentials/{name}
    PUT    /api/v1/credentials/{name}            {secret, description?, allowedHosts?}
    DELETE /api/v1/credentials/{name}
    GET    /api/v1/executions/{id}/resources     links the run's steps recorded

The tenant is the ``X-Tenant-Id`` header (``default`` without it), as for workflows.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from dataworkflows.api.errors import read_json_object
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.api.models import Credential, CredentialList, ResourceLinkList
from dataworkflows.api.request_args import no_unknown_fields
from dataworkflows.api.request_models import CredentialRequest, CredentialUpdate, PageQuery
from dataworkflows.api.route_spec import spec
from dataworkflows.common.errors import NotFound, Unprocessable
from dataworkflows.common.pagination import page as paged
from dataworkflows.common.pagination import parse_page
from dataworkflows.ledger.resources import link_view
from dataworkflows.secrets.credentials import credential_view

connector_routes = web.RouteTableDef()

TAGS = ["credentials"]
_CREATE_FIELDS = {"name", "secret", "description", "allowedHosts"}


def _not_found(name: str, tenant_id: str) -> NotFound:
    return NotFound(f"no credential {name!r} for tenant {tenant_id!r}", code="credential_not_found")


@connector_routes.post("/api/v1/credentials")
@spec(
    "createCredential",
    role="admin",
    tags=TAGS,
    body=CredentialRequest,
    ok={201: ("Created", Credential)},
    errors=(400, 409, 422, 503),
)
async def create_credential(request: web.Request) -> web.Response:
    """Store a write-only secret for the tenant."""
    kernel = request.app[kernel_key]
    body = await read_json_object(request)
    no_unknown_fields(body, _CREATE_FIELDS)
    for required in ("name", "secret"):
        if required not in body:
            raise Unprocessable(
                f"{required} is required",
                code="invalid_credential",
                details={"path": f"$.{required}"},
            )
    row, _ = await kernel.credentials.store.put(
        tenant(request),
        body["name"],
        body["secret"],
        description=body.get("description"),
        allowed_hosts=body.get("allowedHosts"),
        actor=principal(request),
        create_only=True,
    )
    return web.json_response(
        credential_view(row),
        status=201,
        headers={"Location": f"/api/v1/credentials/{row['name']}"},
    )


@connector_routes.get("/api/v1/credentials")
@spec(
    "listCredentials",
    role="viewer",
    tags=TAGS,
    query=PageQuery,
    ok={200: ("A page of credentials, by name", CredentialList)},
    errors=(422,),
)
async def list_credentials(request: web.Request) -> web.Response:
    """The tenant's credentials (never the secrets)."""
    kernel = request.app[kernel_key]
    request_page = parse_page(request.query, "credentials")
    after = request_page.after[0] if request_page.after else None
    rows = await kernel.credentials.store.list(
        tenant(request), after=after, limit=request_page.limit + 1
    )
    return web.json_response(
        paged("credentials", rows, request_page, lambda r: [r["name"]], credential_view)
    )


@connector_routes.get("/api/v1/credentials/{name}")
@spec(
    "getCredential",
    role="viewer",
    tags=TAGS,
    ok={200: ("The credential", Credential)},
    errors=(404,),
)
async def get_credential(request: web.Request) -> web.Response:
    """One credential's metadata."""
    kernel = request.app[kernel_key]
    name, tenant_id = request.match_info["name"], tenant(request)
    row = await kernel.credentials.store.get(tenant_id, name)
    if row is None:
        raise _not_found(name, tenant_id)
    return web.json_response(credential_view(row))


@connector_routes.put("/api/v1/credentials/{name}")
@spec(
    "putCredential",
    role="admin",
    tags=TAGS,
    body=CredentialUpdate,
    ok={200: ("Replaced", Credential), 201: ("Created", Credential)},
    errors=(400, 409, 422, 503),
)
async def put_credential(request: web.Request) -> web.Response:
    """Create or replace a credential (the secret is required: it is write-only)."""
    kernel = request.app[kernel_key]
    name = request.match_info["name"]
    body = await read_json_object(request)
    no_unknown_fields(body, _CREATE_FIELDS)
    if "name" in body and body["name"] != name:
        raise Unprocessable(
            "the body's name does not match the URL",
            code="invalid_credential",
            details={"path": "$.name"},
        )
    if "secret" not in body:
        raise Unprocessable(
            "secret is required (secrets are write-only: send it again to change metadata)",
            code="invalid_credential",
            details={"path": "$.secret"},
        )
    row, created = await kernel.credentials.store.put(
        tenant(request),
        name,
        body["secret"],
        description=body.get("description"),
        allowed_hosts=body.get("allowedHosts"),
        actor=principal(request),
    )
    return web.json_response(credential_view(row), status=201 if created else 200)


@connector_routes.delete("/api/v1/credentials/{name}")
@spec("deleteCredential", role="admin", tags=TAGS, ok={204: ("Deleted", None)}, errors=(404,))
async def delete_credential(request: web.Request) -> web.Response:
    """Delete a credential."""
    kernel = request.app[kernel_key]
    name, tenant_id = request.match_info["name"], tenant(request)
    if not await kernel.credentials.store.delete(tenant_id, name):
        raise _not_found(name, tenant_id)
    return web.Response(status=204)


@connector_routes.get("/api/v1/executions/{execution_id}/resources")
@spec(
    "executionResources",
    role="viewer",
    tags=["executions"],
    ok={200: ("The links", ResourceLinkList)},
    errors=(404,),
)
async def execution_resources(request: web.Request) -> web.Response:
    """External resources the run's steps created (resource links)."""
    kernel = request.app[kernel_key]
    raw = request.match_info["execution_id"]
    try:
        execution_id = uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no execution {raw!r}", code="execution_not_found") from None
    row = await kernel.ledger.get_execution(execution_id)
    if row is None or row["tenant_id"] != tenant(request):
        raise NotFound(f"no execution {raw!r}", code="execution_not_found")
    links = await kernel.resources.list_for_execution(execution_id)
    return web.json_response({"items": [link_view(r) for r in links]})
