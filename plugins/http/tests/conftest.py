"""Helpers for the http plugin's tests: a context without a kernel, a loopback server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from dataworkflows import ActionContext, Credential, CredentialError, Credentials

LOOPBACK = "127.0.0.0/8,::1/128"


class MemoryCredentials(Credentials):
    """Credentials of one tenant held in memory (what the kernel's store gives an action)."""

    def __init__(self, values: dict[str, str | Credential], tenant_id: str = "default") -> None:
        self.tenant_id = tenant_id
        self._values = values
        self.fetched: list[str] = []

    async def fetch(self, name: str) -> Credential:
        self.fetched.append(name)
        value = self._values.get(name)
        if value is None:
            raise CredentialError(f"no credential named {name!r} for tenant {self.tenant_id!r}")
        if isinstance(value, Credential):
            return value
        return Credential(name, value, source="memory")


def make_context(
    *, settings: dict[str, str] | None = None, credentials: Credentials | None = None
) -> ActionContext:
    return ActionContext(
        execution_id="00000000-0000-0000-0000-000000000001",
        workflow_id="wf",
        workflow_version=1,
        node_id="call",
        attempt=1,
        idempotency_key="00000000-0000-0000-0000-000000000001:call",
        trigger={},
        http=None,  # type: ignore[arg-type]  # http.request uses its own guarded session
        log=logging.LoggerAdapter(logging.getLogger("test.http"), {}),
        cancelled=asyncio.Event(),
        settings=settings if settings is not None else {"http_allow_networks": LOOPBACK},
        credentials=credentials or Credentials(),
    )


@pytest.fixture
def context() -> Callable[..., ActionContext]:
    """``context(settings=..., credentials=...)``: an ActionContext without a kernel."""
    return make_context


@pytest.fixture
def memory_credentials() -> type[MemoryCredentials]:
    return MemoryCredentials


class Recorder:
    """A loopback HTTP server whose routes the test defines; it records every request."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.requests: list[dict[str, Any]] = []
        self.server: TestServer | None = None

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.query),
                    "headers": dict(request.headers),
                    "body": await request.read(),
                }
            )
            return await handler(request)

        self.app.middlewares.append(record)

    def url(self, path: str = "/") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest_asyncio.fixture
async def recorder_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[TestServer] = []

    async def make(routes: Callable[[web.RouteTableDef], None]) -> Recorder:
        recorder = Recorder()
        table = web.RouteTableDef()
        routes(table)
        recorder.app.add_routes(table)
        recorder.server = TestServer(recorder.app, host="127.0.0.1")
        await recorder.server.start_server()
        servers.append(recorder.server)
        return recorder

    yield make
    for server in servers:
        await server.close()
