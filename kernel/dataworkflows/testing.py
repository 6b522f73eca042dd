"""Pytest fixtures for testing DataWorkflows and its plugins (a ``pytest11`` plugin).

Installed with the kernel; a plugin's tests can use them with no conftest::

    async def test_hello(kernel_factory, run_workflow):
        kernel = await kernel_factory(plugins=[dataworkflows_hello])
        run = await run_workflow(kernel, {...definition...}, trigger={"name": "Ada"})
        assert run["status"] == "Succeeded"

Fixtures:
    backend            "sqlite" always; also "postgresql" when DATAWORKFLOWS_TEST_POSTGRES_URL
                       is set (tests using a database run once per backend).
    database_url       a fresh, migrated database for this test (copied from a template
                       migrated once per session, so it is fast).
    kernel_factory     ``await kernel_factory(plugins=[...], entrypoints=False, **settings)``:
                       a started :class:`~dataworkflows.kernel.Kernel` on ``database_url``;
                       closed after the test. Its secret key is the SQLite key file, or on
                       PostgreSQL a key generated for the test (shared by every kernel of
                       the test); pass ``secret_key=...`` (None: no key) to choose.
    kernel             a kernel with every installed plugin.
    api_factory        ``await api_factory(kernel)``: an ``aiohttp`` test client of the
                       real app (HTTP over 127.0.0.1) with its embedded worker.
    api                ``api_factory(kernel)``.
    run_workflow       ``await run_workflow(kernel, definition, trigger=...)``: create,
                       publish, execute and wait; returns the execution view with actions.
                       An invalid definition raises :class:`Unprocessable` (code
                       ``invalid_definition``, ``details["problems"]``) and runs nothing.
    fake_clock         a :class:`~dataworkflows.common.clock.FakeClock`.
    http_server        a :class:`RecordingServer`: a local HTTP server on 127.0.0.1 that
                       records every request and answers the replies a test scripts.
    http_server_factory ``await http_server_factory()``: another one.

The whole guide, with examples that the kernel's tests run: ``docs/testing.md``.

Hook coverage: with ``dataworkflows_every_hook_called = true`` in the pytest configuration
(the kernel's own suite sets it), every plugin manager the session builds records which
hooks it calls with a plugin's implementation (:class:`HookCallRecorder`, through pluggy's
hook-call monitoring), and a session that ran the whole suite fails if a hook of
:mod:`dataworkflows.hookspecs` was never called. Selecting tests (paths, ``-k``, ``-m``,
``--deselect``) or stopping early (``-x``) skips the check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

from dataworkflows.common.errors import Unprocessable

__all__ = ["RecordedRequest", "RecordingServer", "Unprocessable", "postgres_only"]

POSTGRES_ENV = "DATAWORKFLOWS_TEST_POSTGRES_URL"


EVERY_HOOK_INI = "dataworkflows_every_hook_called"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        EVERY_HOOK_INI,
        type="bool",
        default=False,
        help="fail a run of the whole suite that never called some hook of the plugin contract",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs DATAWORKFLOWS_TEST_POSTGRES_URL")
    if config.getini(EVERY_HOOK_INI):
        recorder = HookCallRecorder()
        config.stash[_RECORDER] = recorder
        config.add_cleanup(recorder.start())


class HookCallRecorder:
    """Records the names of the hooks called with at least one plugin implementation (not
    only the kernel's built-in ones, nor only wrappers), in every plugin manager built
    while it is started."""

    def __init__(self) -> None:
        self.called: set[str] = set()

    def start(self) -> Callable[[], None]:
        """Watch the plugin managers built from now on; returns the function that stops."""
        from dataworkflows.plugins.manager import monitor_hook_calls

        return monitor_hook_calls(self.before, self.after)

    def before(self, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        """pluggy's ``before`` monitor: note ``hook_name`` if a plugin implements it."""
        from dataworkflows.plugins.builtin import DEFAULT_PLUGINS

        if any(
            not (impl.wrapper or impl.hookwrapper) and impl.plugin not in DEFAULT_PLUGINS
            for impl in hook_impls
        ):
            self.called.add(hook_name)

    def after(self, *args: Any) -> None:
        """pluggy's ``after`` monitor: nothing to do."""

    def missing(self) -> list[str]:
        """The hookspecs no recorded call reached, in the contract's order."""
        from dataworkflows.plugins.hookdoc import hookspec_functions

        return [name for name in hookspec_functions() if name not in self.called]


_RECORDER = pytest.StashKey[HookCallRecorder]()
_DESELECTED = pytest.StashKey[bool]()


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[_DESELECTED] = True


def ran_whole_suite(session: pytest.Session) -> bool:
    """Whether ``session`` ran every test of the configured ``testpaths`` (or of the root
    directory): nothing deselected, no narrower path or node id, not stopped early."""
    config = session.config
    if config.stash.get(_DESELECTED, False) or session.shouldstop or session.shouldfail:
        return False
    if any("::" in arg for arg in config.args):
        return False
    given = [(config.invocation_params.dir / arg).resolve() for arg in config.args]
    wanted = [config.rootpath / p for p in config.getini("testpaths")] or [config.rootpath]
    return all(any(w == g or g in w.parents for g in given) for w in wanted)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    recorder = session.config.stash.get(_RECORDER, None)
    if recorder is None or exitstatus not in (0, 1) or not ran_whole_suite(session):
        return
    missing = recorder.missing()
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            "no test called these hooks with a plugin's implementation "
            f"({EVERY_HOOK_INI}): {', '.join(missing)}"
        )
        if reporter is not None:
            reporter.write_sep("=", message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _backends() -> list[Any]:
    return [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} not set"
                ),
            ],
        ),
    ]


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


#: Run a test on PostgreSQL only (e.g. multi-process tests):
#: ``@postgres_only`` above a test that uses ``database_url``.
postgres_only = pytest.mark.parametrize("backend", _backends()[1:], indirect=True)


class _Templates:
    """Databases migrated once per session; each test gets a copy."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._sqlite: Path | None = None
        self._pg_template: str | None = None
        self._pg_created: list[str] = []

    def sqlite(self) -> str:
        from dataworkflows.db import migrate

        if self._sqlite is None:
            path = self.tmp / "template.db"
            migrate.upgrade(f"sqlite:///{path}")
            self._sqlite = path
        target = self.tmp / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(self._sqlite, target)
        return f"sqlite+aiosqlite:///{target}"

    def _admin(self) -> Any:
        import psycopg

        from dataworkflows.db.database import libpq_url

        url = libpq_url(os.environ[POSTGRES_ENV])
        return psycopg.connect(url, autocommit=True)

    def postgresql(self) -> str:
        from sqlalchemy.engine import make_url

        from dataworkflows.db import migrate

        base = make_url(os.environ[POSTGRES_ENV])
        if self._pg_template is None:
            name = f"{base.database}_tmpl_{os.getpid()}"
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
            migrate.upgrade(base.set(database=name).render_as_string(hide_password=False))
            self._pg_template = name
        name = f"{base.database}_t{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._pg_template}"')
        self._pg_created.append(name)
        return base.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        if name in self._pg_created:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._pg_created.remove(name)

    def close(self) -> None:
        if self._pg_template is not None:
            with self._admin() as conn:
                for name in [*self._pg_created, self._pg_template]:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _dw_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("dataworkflows"))
    yield templates
    templates.close()


@pytest.fixture
def database_url(backend: str, _dw_templates: _Templates) -> Iterator[str]:
    url = _dw_templates.sqlite() if backend == "sqlite" else _dw_templates.postgresql()
    yield url
    if backend != "sqlite":
        _dw_templates.drop(url)


def _generate_key() -> str:
    from dataworkflows.secrets.keys import generate_key

    return generate_key()


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


@contextlib.asynccontextmanager
async def _closed_after(close: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[list[Any]]:
    """A list to put what a factory fixture makes in; each is closed at the end, newest
    first."""
    made: list[Any] = []
    try:
        yield made
    finally:
        for item in reversed(made):
            await close(item)


@pytest.fixture
def fake_clock() -> Any:
    from dataworkflows.common.clock import FakeClock

    return FakeClock()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - async fixtures need pytest-asyncio
    pytest_asyncio = None

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def kernel_factory(database_url: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
        from dataworkflows.kernel import Kernel
        from dataworkflows.settings import Settings

        kernels: list[Any] = []
        # PostgreSQL has no key file: every kernel of the test shares one generated key
        test_key = None if database_url.startswith("sqlite") else _generate_key()

        async def make(
            *,
            plugins: list[Any] | tuple[Any, ...] = (),
            entrypoints: bool = True,
            clock: Any = None,
            **settings: Any,
        ) -> Any:
            values: dict[str, Any] = {
                "database_url": database_url,
                "poll_interval": 0.2,
                "shutdown_grace": 1.0,
            }
            if test_key is not None:
                values["secret_key"] = test_key
            values.update(settings)
            kernel = Kernel(
                Settings(**values), extra_plugins=plugins, entrypoints=entrypoints, clock=clock
            )
            await kernel.start()
            kernels.append(kernel)
            return kernel

        yield make
        for kernel in reversed(kernels):
            await kernel.close()

    @pytest_asyncio.fixture
    async def kernel(kernel_factory: Callable[..., Awaitable[Any]]) -> Any:
        return await kernel_factory()

    @pytest_asyncio.fixture
    async def api_factory() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
        from aiohttp.test_utils import TestClient, TestServer

        from dataworkflows.api import create_app

        async with _closed_after(lambda client: client.close()) as clients:

            async def make(kernel: Any, *, run_worker: bool = True) -> Any:
                app = create_app(kernel, run_worker=run_worker)
                client = TestClient(TestServer(app, host="127.0.0.1"))
                await client.start_server()
                clients.append(client)
                return client

            yield make

    @pytest_asyncio.fixture
    async def api(api_factory: Callable[..., Awaitable[Any]], kernel: Any) -> Any:
        return await api_factory(kernel)

    @pytest_asyncio.fixture
    async def http_server_factory() -> AsyncIterator[Callable[[], Awaitable[RecordingServer]]]:
        async with _closed_after(lambda server: server.close()) as servers:

            async def make() -> RecordingServer:
                server = RecordingServer()
                await server.start()
                servers.append(server)
                return server

            yield make

    @pytest_asyncio.fixture
    async def http_server(
        http_server_factory: Callable[[], Awaitable[RecordingServer]],
    ) -> RecordingServer:
        return await http_server_factory()

    @pytest.fixture
    def run_workflow() -> Callable[..., Awaitable[dict[str, Any]]]:
        async def run(
            kernel: Any,
            definition: dict[str, Any],
            *,
            trigger: dict[str, Any] | None = None,
            request_id: str | None = None,
            timeout: float = 30.0,
        ) -> dict[str, Any]:
            await kernel.service.apply(definition)
            summary, _ = await kernel.service.execute(
                definition["id"], trigger=trigger or {}, request_id=request_id
            )
            kernel.start_worker()
            await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), timeout)
            return dict(await kernel.service.get_execution(summary["executionId"]))

        return run
