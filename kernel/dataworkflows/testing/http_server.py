"""A recording local HTTP server for connector tests (the ``http_server`` fixture)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.test_utils import TestServer


@dataclass(frozen=True)
class RecordedRequest:
    """One request a :class:`RecordingServer` received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    repeat: bool


@dataclass
class RecordingServer:
    """A local HTTP server (127.0.0.1, a free port) for connector tests: it records every
    request in :attr:`requests` and answers what the test scripted with :meth:`reply` (or
    an aiohttp handler given to :meth:`route`). A request nothing was scripted for is
    answered ``404 {"error": "no reply scripted for GET /path"}`` (and recorded), so a
    test sees an unexpected call instead of hanging."""

    requests: list[RecordedRequest] = field(default_factory=list)
    _replies: dict[tuple[str, str], list[_Reply]] = field(default_factory=dict)
    _handlers: dict[tuple[str, str], Callable[..., Awaitable[Any]]] = field(default_factory=dict)
    _server: TestServer | None = None

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        assert self._server is not None, "the server is not started"
        return str(self._server.make_url(path))

    def reply(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        json: Any = None,
        body: str | bytes = b"",
        headers: dict[str, str] | None = None,
        repeat: bool = False,
    ) -> None:
        """Script the answer to the next ``method path`` request: ``json`` (sent as
        ``application/json``) or ``body``. Replies to one method and path are used once
        each, in order; ``repeat=True`` answers every later request with this one."""
        import json as jsonlib

        headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json)
            headers.setdefault("Content-Type", "application/json")
        data = body.encode() if isinstance(body, str) else body
        key = (method.upper(), path)
        self._replies.setdefault(key, []).append(_Reply(status, data, headers, repeat))

    def route(self, method: str, path: str, handler: Callable[..., Awaitable[Any]]) -> None:
        """Answer ``method path`` with an aiohttp ``handler(request)`` (after the scripted
        replies, if any, are used up)."""
        self._handlers[(method.upper(), path)] = handler

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests to ``method path``, in order."""
        return [r for r in self.requests if (r.method, r.path) == (method.upper(), path)]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        body = await request.read()
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), dict(request.headers), body
            )
        )
        key = (request.method, request.path)
        queued = self._replies.get(key)
        if queued:
            scripted = queued[0] if queued[0].repeat else queued.pop(0)
            return web.Response(
                status=scripted.status, body=scripted.body, headers=scripted.headers
            )
        handler = self._handlers.get(key)
        if handler is not None:
            return await handler(request)  # type: ignore[no-any-return]
        message = f"no reply scripted for {request.method} {request.path}"
        return web.json_response({"error": message}, status=404)

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port)."""
        from aiohttp import web
        from aiohttp.test_utils import TestServer

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.close()
