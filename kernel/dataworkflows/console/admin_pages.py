"""Console pages of the installation: plugins with their types and schemas, the tenant's
credentials (names and metadata only; create and rotate, never shown back), and the
interactive API reference (vendored Swagger UI over ``/api/v1/openapi.json``)."""

from __future__ import annotations

from aiohttp import web

from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.common.errors import NotFound
from dataworkflows.console.rendering import action_form, done, pretty, render
from dataworkflows.secrets.credentials import check_name, credential_view

#: credentials listed on the page at most (names only; the API pages through more)
MAX_CREDENTIALS = 500


async def plugins_page(request: web.Request) -> web.Response:
    """Installed plugins, their action and trigger types, and each type's JSON schema."""
    kernel = request.app[kernel_key]
    plugins = kernel.plugins.describe(include_defaults=True, schemas=True)
    return render(request, "plugins.html", {"plugins": plugins, "pretty": pretty})


async def credentials_page(request: web.Request) -> web.Response:
    """The tenant's credentials: names and metadata, never a value."""
    kernel = request.app[kernel_key]
    rows = await kernel.credentials.store.list(tenant(request), limit=MAX_CREDENTIALS)
    problem = kernel.credentials.store.key_problem
    return render(
        request,
        "credentials.html",
        {"credentials": [credential_view(r) for r in rows], "key_problem": problem},
    )


def _hosts(raw: str) -> list[str] | None:
    hosts = [h.strip() for h in raw.replace(",", "\n").splitlines() if h.strip()]
    return hosts or None


async def create_credential_action(request: web.Request) -> web.Response:
    """Store a new credential (409 if the name exists); the value is never shown again."""
    kernel = request.app[kernel_key]
    form = await action_form(request)
    row, _ = await kernel.credentials.store.put(
        tenant(request),
        form.get("name", ""),
        form.get("secret", ""),
        description=form.get("description") or None,
        allowed_hosts=_hosts(form.get("allowedHosts", "")),
        actor=principal(request),
        create_only=True,
    )
    return done("/credentials", f"credential {row['name']} created")


async def rotate_credential_action(request: web.Request) -> web.Response:
    """Replace an existing credential's value (its description and hosts stay)."""
    kernel = request.app[kernel_key]
    form = await action_form(request)
    name = check_name(request.match_info["name"])
    current = await kernel.credentials.store.get(tenant(request), name)
    if current is None:
        raise NotFound(f"no credential {name!r}", code="credential_not_found")
    await kernel.credentials.store.put(
        tenant(request),
        name,
        form.get("secret", ""),
        description=current["description"],
        allowed_hosts=current["allowed_hosts"],
        actor=principal(request),
    )
    return done("/credentials", f"credential {name} rotated")


async def api_reference_page(request: web.Request) -> web.Response:
    """The OpenAPI document in Swagger UI, with try-it-out against this server."""
    return render(request, "api_reference.html", {})
