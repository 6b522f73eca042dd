"""What every console page shares: rendering with the common context, the form token that
guards each action (double-submit cookie), flash messages and safe redirects."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

import aiohttp_jinja2
from aiohttp import web

from dataworkflows.api.auth import IDENTITY_KEY, SESSION_COOKIE
from dataworkflows.common.errors import ApiError, BadRequest

#: cookie holding the browser's form token (SameSite=Strict: never sent cross-site)
TOKEN_COOKIE = "dw_console_token"
#: cookie carrying one message to the next page after an action (read once)
FLASH_COOKIE = "dw_console_flash"
#: the console's mount point of its static files
STATIC_PREFIX = "/console-static"


class Forbidden(ApiError):
    """403: an action's form token is missing or does not match the browser's cookie."""

    status = 403
    code = "forbidden"


def _token(request: web.Request) -> tuple[str, bool]:
    """The browser's form token and whether it is new (then the response sets the cookie)."""
    value = request.cookies.get(TOKEN_COOKIE, "")
    if len(value) == 43 and value.replace("-", "").replace("_", "").isalnum():
        return value, False
    return secrets.token_urlsafe(32), True


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """Render ``template`` with the common context (identity, form token, flash, nav)."""
    token, fresh = _token(request)
    raw_flash = request.cookies.get(FLASH_COOKIE)
    flash = unquote(raw_flash) if raw_flash else None
    caller = request.get(IDENTITY_KEY)  # None on the public sign-in page
    common = {
        "tenant": caller.tenant if caller is not None else None,
        "principal": caller.principal if caller is not None else None,
        "signed_in": SESSION_COOKIE in request.cookies,
        "token": token,
        "flash": flash,
        "path": request.path,
        "static": STATIC_PREFIX,
    }
    response = aiohttp_jinja2.render_template(
        template, request, {**common, **context}, status=status
    )
    response.headers["Cache-Control"] = "no-store"
    if fresh:
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
    if raw_flash is not None:
        response.del_cookie(FLASH_COOKIE, path="/")
    return response


async def action_form(request: web.Request) -> dict[str, str]:
    """The posted form of an action, after checking its token against the cookie (403)."""
    form = await request.post()
    given = form.get("token")
    cookie = request.cookies.get(TOKEN_COOKIE)
    if not cookie or not isinstance(given, str) or not secrets.compare_digest(given, cookie):
        raise Forbidden(
            "the form's token is missing or stale; reload the page and try again",
            code="invalid_form_token",
        )
    return {k: v for k, v in form.items() if isinstance(v, str)}


def done(location: str, message: str) -> web.Response:
    """303 to ``location`` (a path of this site) carrying ``message`` to the next page."""
    if not location.startswith("/") or location.startswith("//"):
        raise BadRequest("redirects stay on this site", code="invalid_redirect")
    response = web.Response(status=303, headers={"Location": location})
    response.set_cookie(FLASH_COOKIE, quote(message[:300]), samesite="Strict", path="/")
    return response


def json_field(form: dict[str, str], name: str) -> dict[str, Any] | None:
    """A form field holding a JSON object (empty: None); 422-style error otherwise."""
    raw = (form.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(
            f"{name} is not valid JSON: {exc}", code="invalid_json", details={"field": name}
        ) from None
    if not isinstance(value, dict):
        raise BadRequest(
            f"{name} must be a JSON object", code="invalid_json", details={"field": name}
        )
    return value


def pretty(value: Any) -> str:
    """JSON for a ``<pre>`` block (the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def when(value: str | None) -> str:
    """An ISO 8601 time as ``YYYY-MM-DD HH:MM:SS`` UTC (empty for None)."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value
