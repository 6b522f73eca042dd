"""The ceiling: how many single-row INSERT commits per second this PostgreSQL takes.

``pgbench`` (when installed) runs a one-statement script, ``INSERT INTO bench_ceiling (v)
VALUES (1)``, each statement its own transaction and so its own durable commit, for
``seconds`` with 1 and with 4 clients. Without pgbench a psycopg loop does the same (one
thread per client, autocommit INSERTs); it is reported as such, and it is slower per
client than pgbench because the client itself is Python.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from benchmarks import pg
from benchmarks.common import BenchmarkError

SCRIPT = "INSERT INTO bench_ceiling (v) VALUES (1);\n"


def _prepare(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_ceiling")
        conn.execute("CREATE TABLE bench_ceiling (id bigserial PRIMARY KEY, v integer NOT NULL)")


def _pgbench(url: str, clients: int, seconds: float) -> dict[str, Any]:
    parsed = make_url(url)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text(SCRIPT)
        cmd = [
            "pgbench",
            "-n",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-T",
            str(max(1, round(seconds))),
            "-f",
            str(script),
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username or "postgres",
            parsed.database or "postgres",
        ]
        env = None
        if parsed.password:
            import os

            env = dict(os.environ, PGPASSWORD=parsed.password)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, env=env, check=False
        )
    if proc.returncode != 0:
        raise BenchmarkError(f"pgbench failed: {proc.stderr.strip()[-500:]}")
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", proc.stdout)
    if match is None:
        match = re.search(r"tps = ([0-9.]+)", proc.stdout)
    if match is None:
        raise BenchmarkError(f"cannot read tps from pgbench: {proc.stdout[-500:]}")
    return {"clients": clients, "commits_per_s": round(float(match.group(1)), 1), "tool": "pgbench"}


def _psycopg_loop(url: str, clients: int, seconds: float) -> dict[str, Any]:
    counts = [0] * clients
    stop_at = time.monotonic() + seconds
    failures: list[str] = []

    def work(k: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while time.monotonic() < stop_at:
                    conn.execute("INSERT INTO bench_ceiling (v) VALUES (1)", prepare=True)
                    counts[k] += 1
        except Exception as exc:  # reported, not raised from a thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.monotonic() - started
    if failures:
        raise BenchmarkError(f"psycopg insert loop failed: {failures[0]}")
    return {
        "clients": clients,
        "commits_per_s": round(sum(counts) / elapsed, 1),
        "tool": "psycopg",
    }


def run_ceiling(
    admin_url: str, database: str, *, seconds: float = 10.0, tool: str = "auto"
) -> dict[str, Any]:
    """Insert-commit rates with 1 and 4 clients on a scratch database ``database``."""
    pg.create_database(admin_url, database)
    url = pg.database_url(admin_url, database, driver=False)
    try:
        _prepare(url)
        use_pgbench = tool == "pgbench" or (tool == "auto" and shutil.which("pgbench"))
        runner = _pgbench if use_pgbench else _psycopg_loop
        one = runner(url, 1, seconds)
        _prepare(url)
        four = runner(url, 4, seconds)
        return {
            "ok": True,
            "tool": one["tool"],
            "seconds": seconds,
            "clients_1_commits_per_s": one["commits_per_s"],
            "clients_4_commits_per_s": four["commits_per_s"],
        }
    finally:
        pg.drop_database(admin_url, database)
