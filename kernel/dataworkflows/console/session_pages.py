"""Signing in to the console: a browser cannot send an ``Authorization`` header, so the
sign-in page takes an API token or a JWT, checks it, and keeps it in the ``dw_session``
cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) that the auth middleware accepts for
console routes and reads (docs/console.md, docs/auth.md). In loose mode nobody needs to
sign in; a session signed in there still acts as its token says."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from dataworkflows.api.auth import SESSION_COOKIE, auth_key
from dataworkflows.common.errors import ApiError
from dataworkflows.console.rendering import action_form, done, render


def _next(value: str | None) -> str:
    """Where to go after signing in: a path of this site, else the workflows page."""
    target = unquote(value or "")
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def login_page(request: web.Request) -> web.Response:
    """The sign-in form."""
    return render(request, "login.html", {"next": _next(request.query.get("next")), "error": None})


async def login_action(request: web.Request) -> web.Response:
    """Check the credential; on success set the session cookie and go on (303)."""
    form = await action_form(request)
    target = _next(form.get("next"))
    credential = (form.get("credential") or "").strip()
    try:
        caller = await request.app[auth_key].verify(credential)
    except ApiError as exc:
        context = {"next": target, "error": f"{exc.message} ({exc.code})"}
        return render(request, "login.html", context, status=exc.status)
    response = done(target, f"signed in to tenant {caller.tenant} as {caller.role}")
    response.set_cookie(
        SESSION_COOKIE,
        credential,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return response


async def logout_action(request: web.Request) -> web.Response:
    """Forget the session cookie (303 to the sign-in page)."""
    await action_form(request)
    response = done("/login", "signed out")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
