"""Shared helpers for the kernel's tests. The fixtures come from ``dataworkflows.testing``."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def _load(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text())


@pytest.fixture
def load_fixture() -> Any:
    """``load_fixture("workflows/x.json")``: a fixture file from ``fixtures/``, parsed."""
    return _load


@pytest.fixture
def simple_echo() -> dict[str, Any]:
    return _load("workflows/simple-echo-workflow.json")


@pytest.fixture
def execute_request() -> dict[str, Any]:
    return _load("requests/execute-request.json")


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cli("runs", "list")``: the ``dataworkflows`` CLI, in process, on this test's
    database; returns click's result (``exit_code``, ``output``)."""
    from click.testing import CliRunner

    from dataworkflows.cli.main import build_cli

    monkeypatch.setenv("DATAWORKFLOWS_DATABASE_URL", database_url)
    monkeypatch.delenv("DATAWORKFLOWS_LOAD_PLUGINS", raising=False)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def install_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """``install_distribution("dataworkflows-bad", {"bad_mod": "source"}, bad="bad_mod")``:
    a real installed distribution for this test (a ``.dist-info`` with its entry points in
    the ``dataworkflows`` group and its modules, on ``sys.path``); ``importlib.metadata``
    finds it like any other. Its modules are forgotten afterwards."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install(
        name: str, sources: dict[str, str], version: str = "1.0", **entry_points: str
    ) -> None:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[dataworkflows]\n{lines}")
        for module, source in sources.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)
        importlib.invalidate_caches()

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def _run_pytest_in(
    folder: Path, pythonpath: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture
def run_pytest_in() -> Any:
    """``run_pytest_in(folder, pythonpath=[...])``: ``pytest`` run in ``folder`` by this
    interpreter, as a plugin author runs it there (``-W error``: no warning allowed);
    returns the completed process."""
    return _run_pytest_in


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    bindir = Path(out.stdout.strip())
    return bindir if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def stock_postgres() -> Iterator[str]:
    """The URL of a fresh ``initdb`` cluster with PostgreSQL's own defaults (no
    ``cluster_name``, unlike Debian's clusters), on a free port of 127.0.0.1; skipped when
    PostgreSQL's server binaries are not installed. As root, it runs as ``postgres``."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (pg_config --bindir) not installed")
    user: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="dw-stock-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        os.chown(base, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    data, port = base / "data", _free_port()
    try:
        subprocess.run(
            [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            **user,
        )
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {base}"
        subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-o", options, "-l", base / "log", "-w", "start"],
            check=True,
            capture_output=True,
            **user,
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
                **user,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


class _Commits:
    count = 0


@contextlib.contextmanager
def _count_commits(kernel: Any) -> Iterator[_Commits]:
    """Count the kernel's database commits (SQLAlchemy's ``commit`` event) in the block."""
    from sqlalchemy import event

    counted = _Commits()

    def count(_conn: Any) -> None:
        counted.count += 1

    event.listen(kernel.db.engine.sync_engine, "commit", count)
    try:
        yield counted
    finally:
        event.remove(kernel.db.engine.sync_engine, "commit", count)


@pytest.fixture
def count_commits() -> Any:
    """``with count_commits(kernel) as commits: ...`` then ``commits.count``."""
    return _count_commits
