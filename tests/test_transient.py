"""Which database errors the writers retry: real errors from real databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from dataworkflows.db.database import sync_url
from dataworkflows.db.transient import RetryPolicy, is_transient, retry_transient
from dataworkflows.testing import postgres_only


def _sqlalchemy_error(url: str, *statements: str) -> DBAPIError:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    except DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_sqlite_busy_is_transient_and_a_constraint_is_not(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        busy = _sqlalchemy_error(
            f"sqlite:///{path}?timeout=0", "BEGIN IMMEDIATE", "INSERT INTO t VALUES (1)"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in str(busy.orig) and is_transient(busy)
    duplicate = _sqlalchemy_error(
        f"sqlite:///{path}", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"
    )
    assert isinstance(duplicate, IntegrityError) and not is_transient(duplicate)


@postgres_only
def test_postgres_errors_by_sqlstate(database_url: str) -> None:
    url = sync_url(database_url)
    killed = _sqlalchemy_error(url, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert killed.orig is not None and is_transient(killed)
    division = _sqlalchemy_error(url, "SELECT 1 / 0")
    assert not is_transient(division)
    serialization = _sqlalchemy_error(
        url, "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'serialization_failure'; END $$"
    )
    assert is_transient(serialization)


async def test_retry_transient_undoes_and_gives_up_on_permanent_errors() -> None:
    policy = RetryPolicy(attempts=5, initial_delay=0.001, max_delay=0.001)
    calls, undone = 0, 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("reset")
        return "ok"

    def undo() -> None:
        nonlocal undone
        undone += 1

    assert await retry_transient(flaky, what="t", policy=policy, on_retry=undo) == "ok"
    assert (calls, undone) == (3, 2)

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("permanent")

    calls = 0
    with pytest.raises(ValueError):
        await retry_transient(broken, what="t", policy=policy)
    assert calls == 1
