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
                       real app (HTTP over 127.0.0.1) with its embedded worker and the
                       web console (``console=False``: the API alone).
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
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dataworkflows.common.errors import Unprocessable
from dataworkflows.testing.hook_coverage import (
    EVERY_HOOK_INI,
    HookCallRecorder,
    pytest_addoption,
    pytest_deselected,
    pytest_sessionfinish,
    ran_whole_suite,
    start_recording,
)
from dataworkflows.testing.http_server import RecordedRequest, RecordingServer

__all__ = [
    "EVERY_HOOK_INI",
    "HookCallRecorder",
    "RecordedRequest",
    "RecordingServer",
    "Unprocessable",
    "postgres_only",
    "pytest_addoption",
    "pytest_deselected",
    "pytest_sessionfinish",
    "ran_whole_suite",
]

POSTGRES_ENV = "DATAWORKFLOWS_TEST_POSTGRES_URL"


def record_batch_sizes(kernel: Any) -> list[int]:
    """Record the size of every step-write batch ``kernel``'s ledger commits from now on
    (a no-shared-fate test checks that its writes did share a batch)."""
    sizes: list[int] = []
    batcher = kernel.ledger._step_writes
    write = batcher._write

    async def recording(items: list[Any]) -> Any:
        sizes.append(len(items))
        return await write(items)

    batcher._write = recording
    return sizes


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs DATAWORKFLOWS_TEST_POSTGRES_URL")
    start_recording(config)


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
                # a step's durable StepStarted/Running row depends on how long it runs:
                # off unless a test asks for it, so that a loaded machine cannot change
                # the rows and events a test expects (its live event is always published)
                "step_started_after_seconds": 3600.0,
                # X-Tenant-Id / X-Principal, as most tests send; a test of strict mode
                # passes auth_mode="strict" (docs/auth.md)
                "auth_mode": "loose",
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

            async def make(kernel: Any, *, run_worker: bool = True, console: bool = True) -> Any:
                app = create_app(kernel, run_worker=run_worker)
                if console:  # the web console, as `dataworkflows serve` mounts it
                    from dataworkflows.console import setup_console

                    setup_console(app)
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
