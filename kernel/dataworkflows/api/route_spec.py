"""What a kernel route declares about itself for the OpenAPI document: :func:`spec`.

A handler says its ``operationId``, tags, request body model, response model per status,
query parameter model and error statuses right where it is defined::

    @routes.get("/api/v1/workflows/{workflow_id}")
    @spec("getWorkflow", role="viewer", tags=WF, ok={200: ("The workflow", Workflow)},
          errors=(404,))
    async def get_workflow(request: web.Request) -> web.Response:
        \"\"\"A workflow with its current (else latest) definition.\"\"\"

``role`` is what the caller needs (docs/auth.md): ``viewer``, ``runner``, ``editor``,
``admin``, or ``public``. The first line of the docstring is the summary, the rest the
description. Path parameters come from the route's path (their schemas from
:data:`PATH_PARAMETERS`); POST and PATCH take an ``Idempotency-Key``.
:mod:`dataworkflows.api.openapi` turns the router and these declarations into the document.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from dataworkflows.common.access import PUBLIC, requires
from dataworkflows.engine.definitions import ID_PATTERN

#: A response body: a pydantic model, a raw JSON schema, or None for no body.
Body = type[BaseModel] | dict[str, Any] | None

_UUID = {"type": "string", "format": "uuid"}

#: Path parameter name → (schema, description); every kernel route's names are here.
PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "workflow_id": ({"type": "string", "pattern": ID_PATTERN}, "Workflow id"),
    "execution_id": (_UUID, "Execution id"),
    "dead_letter_id": (_UUID, ""),
    "version": ({"type": "integer", "minimum": 1}, ""),
    "trigger_id": ({"type": "string"}, ""),
    "name": ({"type": "string"}, ""),
    "template_set_id": ({"type": "string", "pattern": ID_PATTERN}, "Template set id"),
    "workflow_template_id": ({"type": "string", "pattern": ID_PATTERN}, "Workflow template id"),
}

#: Error statuses a route may declare, with the text the document gives them.
ERROR_TEXT = {
    400: "Malformed request (bad JSON, empty body, invalid header)",
    401: "No bearer token, or one that is unknown, expired, revoked or for another audience",
    403: "The credential's role may not do this, or X-Tenant-Id names another tenant",
    404: "Not found (or another tenant's)",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Body over the configured limit",
    422: "Invalid input; details say where",
    503: "A server-side prerequisite is missing",
}


@dataclass(frozen=True)
class RouteSpec:
    """One route's OpenAPI facts (see :func:`spec`)."""

    operation_id: str
    role: str
    tags: tuple[str, ...]
    ok: dict[int, tuple[str, Body]]
    summary: str
    description: str = ""
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    audited: bool = False
    media_type: str = "application/json"
    models: tuple[type[BaseModel], ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = set(self.errors) - set(ERROR_TEXT)
        if unknown:
            raise ValueError(f"{self.operation_id}: no text for error statuses {unknown}")


H = TypeVar("H", bound=Callable[..., Any])

_ATTRIBUTE = "__route_spec__"
#: Every handler :func:`spec` decorated, in order (the tests check each one is routed).
DECLARED: list[Callable[..., Any]] = []


def spec(
    operation_id: str,
    *,
    role: str,
    tags: list[str] | tuple[str, ...],
    ok: dict[int, tuple[str, Body]],
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    errors: tuple[int, ...] = (),
    audited: bool = False,
    media_type: str = "application/json",
) -> Callable[[H], H]:
    """Attach a :class:`RouteSpec` to a handler (put it below the route decorator).

    ``ok``: status → (description, body model/schema/None); ``query``: a model whose fields
    are the query parameters; ``body``: the request body model (``body_required`` False when
    the body may be left out); ``errors``: the 4xx/5xx statuses the route answers with the
    ``Error`` shape; ``audited``: the route writes an audit row (takes ``X-Audit-Note``);
    ``role``: what the caller needs (a role, or ``public``), as
    :func:`dataworkflows.common.access.requires`. Routes that need a role answer 401 and
    403 too (added to ``errors`` here).
    """
    requires(role)  # checks the name
    if role != PUBLIC:
        errors = tuple(sorted({*errors, 401, 403}))

    def decorate(handler: H) -> H:
        doc = inspect.getdoc(handler) or ""
        summary, _, description = doc.partition("\n")
        if not summary:
            raise ValueError(f"{handler.__qualname__}: the docstring is the summary; add one")
        models = [m for _, m in ok.values() if isinstance(m, type)]
        setattr(
            handler,
            _ATTRIBUTE,
            RouteSpec(
                operation_id=operation_id,
                role=role,
                tags=tuple(tags),
                ok=ok,
                summary=summary.strip().rstrip("."),
                description=" ".join(description.split()),
                query=query,
                body=body,
                body_required=body_required,
                errors=errors,
                audited=audited,
                media_type=media_type,
                models=(*models, *([body] if body else [])),
            ),
        )
        DECLARED.append(handler)
        return requires(role)(handler)

    return decorate


def spec_of(handler: Any) -> RouteSpec | None:
    """The :class:`RouteSpec` a handler declared, or None (a plugin's route)."""
    return getattr(handler, _ATTRIBUTE, None)
