"""``http.request``: call any HTTP API from a workflow.

Parameters (JSON, camelCase):
    method: GET (default), POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    url: ``http://`` or ``https://`` URL.
    headers: ``{name: value}``.
    query: ``{name: value or [values]}``, added to the URL's query string.
    json / body: a JSON body, or a raw text body (not both).
    auth: ``{"type": "bearer" | "basic" | "header" | "query", "credential": NAME, ...}``:
        the credential's secret as ``Authorization: Bearer <secret>``; as the password of
        Basic auth with ``username``; as header ``name`` (optional ``prefix``); or as query
        parameter ``name``. A credential with ``allowedHosts`` is only sent to those hosts;
        auth is dropped when a redirect leaves the original origin.
    timeoutSeconds: for the whole exchange, redirects included (default 30).
    maxResponseBytes: larger responses fail the step (default 1 MiB).
    followRedirects / maxRedirects: default true / 5.
    responseType: ``auto`` (JSON when the response says so, else text), ``json``, ``text``.
    failOnStatus: default true: 429, 408 and 5xx are retriable failures (honouring
        ``Retry-After``), other 4xx permanent failures. False returns every status as output.

Outputs: ``{"status", "headers", "json" | "text", "url", "redirects"}``.

Every destination passes the SSRF guard (:mod:`dataworkflows_http.guard`); loopback and
private networks need ``DATAWORKFLOWS_HTTP_ALLOW_NETWORKS``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataworkflows import Action, ActionContext, ActionResult
from dataworkflows_http.guard import (
    AddressPolicy,
    DestinationRefused,
    GuardedResolver,
    check_hosts,
    guarded_socket_factory,
)

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import AbstractResolver
    from yarl import URL

__all__ = ["AddressPolicy", "DestinationRefused", "HttpRequest"]

ALLOW_SETTING = "http_allow_networks"
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
RETRIABLE_STATUSES = {408, 429}
MAX_ERROR_BODY = 2000

Scalar = str | int | float | bool


class Auth(BaseModel):
    """How a credential is attached to the request. A credential with ``allowedHosts`` is
    only sent to those hosts, and it is dropped when a redirect leaves the request's
    origin."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    type: Literal["bearer", "basic", "header", "query"]
    """``bearer``: ``Authorization: Bearer <secret>``; ``basic``: HTTP Basic auth with
    ``username`` and the secret as password; ``header``: the secret in header ``name``
    (after ``prefix``); ``query``: the secret as query parameter ``name``."""
    credential: str = Field(min_length=1, max_length=128)
    """The name of the credential whose secret is sent (never the secret itself)."""
    username: str | None = None
    """``basic`` only (required there): the user name sent with the secret."""
    name: str | None = Field(default=None, min_length=1, max_length=200)
    """``header`` and ``query`` only (required there): the header or query parameter that
    carries the secret, e.g. ``X-API-Key`` or ``api_key``."""
    prefix: str = ""
    """``header`` only: text put before the secret in the header value, e.g. ``Token ``.
    Default: none."""

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        if self.type == "basic" and self.username is None:
            raise ValueError("basic auth needs a username")
        if self.type in ("header", "query") and not self.name:
            raise ValueError(f"{self.type} auth needs a name")
        return self


class ResponseTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the response is larger than maxResponseBytes ({limit} bytes)")
        self.limit = limit


class HttpRequest(Action):
    """Send one HTTP request (following redirects) and return the response."""

    type = "http.request"
    title = "Call an HTTP API"

    #: Test seams: the DNS resolver behind the guard (aiohttp's default when None) and
    #: the socket factory behind the guard's final check (a plain socket when None).
    resolver_factory: ClassVar[Callable[[], AbstractResolver] | None] = None
    socket_factory: ClassVar[Callable[[Any], socket.socket] | None] = None

    class Params(BaseModel):
        """Send one HTTP request and return the response as the step's outputs
        ``status``, ``headers``, ``json`` or ``text``, ``url`` (the final one) and
        ``redirects``. Loopback and private-network destinations are refused unless the
        engine's ``DATAWORKFLOWS_HTTP_ALLOW_NETWORKS`` allows them."""

        model_config = ConfigDict(
            extra="forbid", populate_by_name=True, use_attribute_docstrings=True
        )

        method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
        """The HTTP method. Default: ``GET``."""
        url: str = Field(min_length=1, max_length=8000)
        """The absolute ``http://`` or ``https://`` URL to call."""
        headers: dict[str, str] = Field(default_factory=dict)
        """Request headers, ``{name: value}``. Headers set by ``auth`` take precedence.
        Default: none."""
        query: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
        """Query parameters added to the URL's own, ``{name: value}``; a list value repeats
        the parameter, booleans are sent as ``true`` / ``false``. Default: none."""
        json_body: Any = Field(default=None, alias="json")
        """A JSON body (any JSON value), sent as ``application/json``. Not together with
        ``body``. Default: no body."""
        body: str | None = None
        """A raw text body, sent as UTF-8 (as ``text/plain`` unless ``headers`` sets a
        ``Content-Type``). Not together with ``json``. Default: no body."""
        auth: Auth | None = None
        """Attach a stored credential's secret to the request. Default: no authentication."""
        timeout_seconds: float = Field(default=30.0, gt=0, le=3600, alias="timeoutSeconds")
        """Seconds the whole exchange may take, redirects and reading the response included
        (at most 3600, default 30); a timeout is a retriable failure."""
        max_response_bytes: int = Field(
            default=1024 * 1024, ge=1, le=64 * 1024 * 1024, alias="maxResponseBytes"
        )
        """The largest response body accepted, in bytes (at most 64 MiB, default 1 MiB =
        1048576); a larger one fails the step permanently."""
        follow_redirects: bool = Field(default=True, alias="followRedirects")
        """Follow 301, 302, 303, 307 and 308 redirects. Default: true. When false, the
        redirect response itself is the result."""
        max_redirects: int = Field(default=5, ge=0, le=20, alias="maxRedirects")
        """How many redirects to follow at most (0 to 20, default 5); one more fails the
        step permanently."""
        response_type: Literal["auto", "json", "text"] = Field(default="auto", alias="responseType")
        """How the response body is returned: ``auto`` (default: output ``json`` when the
        response's Content-Type says JSON, else ``text``), ``json`` (a body that is not
        JSON fails the step) or ``text``."""
        fail_on_status: bool = Field(default=True, alias="failOnStatus")
        """Treat error statuses as failures (default: true): 408, 429 and 5xx are
        retriable, honouring ``Retry-After``; other 4xx fail permanently. When false,
        every status is returned as the step's output."""

        @field_validator("url")
        @classmethod
        def _http_url(cls, url: str) -> str:
            if "{{" not in url and not url.lower().startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https://")
            return url

        @model_validator(mode="after")
        def _one_body(self) -> HttpRequest.Params:
            if self.json_body is not None and self.body is not None:
                raise ValueError("give json or body, not both")
            return self

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        # aiohttp and yarl are imported when a request is sent, not with the plugin
        import aiohttp
        from yarl import URL

        try:
            policy = AddressPolicy.from_setting(ctx.settings.get(ALLOW_SETTING))
        except ValueError as exc:
            return ActionResult.failed(
                f"DATAWORKFLOWS_HTTP_ALLOW_NETWORKS is invalid: {exc}", code="invalid_setting"
            )
        try:
            url = URL(params.url)
        except ValueError as exc:
            return ActionResult.failed(f"invalid url: {exc}", code="invalid_url")
        if url.scheme not in ("http", "https") or not url.host:
            return ActionResult.failed(
                "url must be an absolute http:// or https:// URL", code="invalid_url"
            )
        if params.query:
            url = url.update_query(_query_items(params.query))
        headers = _with_trace_context(ctx, params.headers)
        auth_headers: dict[str, str] = {}
        if params.auth is not None:
            # Fetch before anything is sent: an unknown (or another tenant's) name fails here.
            credential = await ctx.credentials.fetch(params.auth.credential)
            if not credential.allows_host(url.host):
                return ActionResult.failed(
                    f"credential {credential.name!r} may not be sent to {url.host}",
                    code="credential_host_not_allowed",
                    details={"host": url.host, "allowedHosts": list(credential.allowed_hosts)},
                )
            url, auth_headers = _apply_auth(ctx, params.auth, credential.secret, url)
        try:
            check_hosts(policy, [url.host])
            async with asyncio.timeout(params.timeout_seconds):
                return await self._exchange(ctx, params, policy, url, headers, auth_headers)
        except DestinationRefused as exc:
            ctx.log.warning("http.request refused: %s", exc)
            return ActionResult.failed(
                str(exc),
                code="destination_refused",
                details={"host": exc.host, "address": exc.address, "reason": exc.reason},
            )
        except TimeoutError:
            return ActionResult.retriable(
                f"no complete response within {params.timeout_seconds:g} s", code="timeout"
            )
        except ResponseTooLarge as exc:
            return ActionResult.failed(
                str(exc), code="response_too_large", details={"maxResponseBytes": exc.limit}
            )
        except aiohttp.InvalidURL as exc:
            return ActionResult.failed(f"invalid url: {exc}", code="invalid_url")
        except (aiohttp.ClientError, OSError) as exc:
            return ActionResult.retriable(f"{type(exc).__name__}: {exc}", code="connection_error")

    def _connector(self, policy: AddressPolicy) -> aiohttp.TCPConnector:
        import aiohttp

        factory = type(self).resolver_factory
        return aiohttp.TCPConnector(
            resolver=GuardedResolver(policy, factory() if factory is not None else None),
            socket_factory=guarded_socket_factory(policy, type(self).socket_factory),
            use_dns_cache=False,
            happy_eyeballs_delay=None,
            force_close=True,
        )

    async def _exchange(
        self,
        ctx: ActionContext,
        params: Params,
        policy: AddressPolicy,
        url: URL,
        headers: dict[str, str],
        auth_headers: dict[str, str],
    ) -> ActionResult:
        import aiohttp
        from yarl import URL

        method = params.method
        json_body, body = params.json_body, params.body
        origin = url.origin()
        redirects = 0
        async with aiohttp.ClientSession(
            connector=self._connector(policy), trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            while True:
                check_hosts(policy, [url.host or ""])
                kwargs: dict[str, Any] = {
                    "headers": {**headers, **auth_headers},
                    "allow_redirects": False,
                }
                if json_body is not None:
                    kwargs["json"] = json_body
                elif body is not None:
                    kwargs["data"] = body
                async with session.request(method, url, **kwargs) as resp:
                    location = resp.headers.get("Location")
                    if params.follow_redirects and resp.status in REDIRECT_STATUSES and location:
                        redirects += 1
                        if redirects > params.max_redirects:
                            return ActionResult.failed(
                                f"more than {params.max_redirects} redirects",
                                code="too_many_redirects",
                                details={"url": str(url)},
                            )
                        target = url.join(URL(location))
                        if target.scheme not in ("http", "https"):
                            return ActionResult.failed(
                                f"redirect to a {target.scheme!r} URL", code="invalid_redirect"
                            )
                        if resp.status == 303 or (
                            resp.status in (301, 302) and method not in ("GET", "HEAD")
                        ):
                            method, json_body, body = "GET", None, None
                        if target.origin() != origin:
                            auth_headers = {}  # never forward a credential to another origin
                        url = target
                        continue
                    raw = await _read_capped(resp, params.max_response_bytes)
                    return _result(params, resp, raw, url, redirects)


def _with_trace_context(ctx: ActionContext, headers: dict[str, str]) -> dict[str, str]:
    """The request's headers plus the attempt's trace context (``traceparent``...: see
    ``ActionContext.propagation_headers``), unless the workflow sets those headers itself."""
    own = {name.lower() for name in headers}
    extra = {k: v for k, v in ctx.propagation_headers().items() if k.lower() not in own}
    return {**extra, **headers}


def _query_items(query: dict[str, Any]) -> list[tuple[str, str]]:
    items = []
    for key, value in query.items():
        for v in value if isinstance(value, list) else [value]:
            items.append((key, json.dumps(v) if isinstance(v, bool) else str(v)))
    return items


def _apply_auth(
    ctx: ActionContext, auth: Auth, secret: str, url: URL
) -> tuple[URL, dict[str, str]]:
    if auth.type == "bearer":
        return url, {"Authorization": f"Bearer {secret}"}
    if auth.type == "basic":
        token = base64.b64encode(f"{auth.username}:{secret}".encode()).decode()
        ctx.credentials.mark_secret(token)
        return url, {"Authorization": f"Basic {token}"}
    if auth.type == "header":
        assert auth.name is not None
        return url, {auth.name: f"{auth.prefix}{secret}"}
    assert auth.name is not None
    return url.update_query({auth.name: secret}), {}


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    length = resp.content_length
    if length is not None and length > limit:
        raise ResponseTooLarge(limit)
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _result(
    params: HttpRequest.Params,
    resp: aiohttp.ClientResponse,
    raw: bytes,
    url: URL,
    redirects: int,
) -> ActionResult:
    headers: dict[str, str] = {}
    for key, value in resp.headers.items():
        key = key.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    text = raw.decode(resp.charset or "utf-8", errors="replace")
    outputs: dict[str, Any] = {
        "status": resp.status,
        "headers": headers,
        "url": str(url),
        "redirects": redirects,
    }
    wants_json = params.response_type == "json" or (
        params.response_type == "auto" and "json" in resp.content_type
    )
    if wants_json and raw.strip():
        try:
            outputs["json"] = json.loads(text)
        except ValueError:
            if params.response_type == "json":
                return ActionResult.failed(
                    "the response is not valid JSON",
                    code="invalid_json",
                    details={"status": resp.status, "body": text[:MAX_ERROR_BODY]},
                )
            outputs["text"] = text
    elif wants_json:
        outputs["json"] = None
    else:
        outputs["text"] = text

    status = resp.status
    if not params.fail_on_status or status < 400:
        return ActionResult.succeeded(outputs)
    details = {"status": status, "url": str(url), "body": text[:MAX_ERROR_BODY]}
    if status in RETRIABLE_STATUSES or status >= 500:
        return ActionResult.retriable(
            f"{params.method} {url.host} answered {status} {resp.reason or ''}".rstrip(),
            code=f"http_{status}",
            details=details,
            retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
        )
    return ActionResult.failed(
        f"{params.method} {url.host} answered {status} {resp.reason or ''}".rstrip(),
        code=f"http_{status}",
        details=details,
    )
