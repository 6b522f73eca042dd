"""The transaction mix of a run, from PostgreSQL's own statement log (a diagnostic).

For the diagnostic W1 run only, the benchmark database gets ``log_statement = 'all'``
(``ALTER DATABASE``: it affects that scratch database alone, for sessions opened after it)
and the server log is read from its size before the run. Each backend's statements are
replayed: ``BEGIN`` ... ``COMMIT`` is one explicit transaction (named by the statements in
it), a statement outside ``BEGIN`` is an implicit transaction of its own (a commit too:
e.g. SQLAlchemy's pool pre-ping ``;``). Best effort: without a readable server log (e.g.
not the Debian layout) the result says so.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from psycopg import sql

from benchmarks import pg

_LINE = re.compile(
    r"\[(?P<pid>\d+)\] \S*@(?P<db>\S+) LOG:  (?:statement|execute [^:]*): (?P<sql>.*)"
)
_WORDS = re.compile(r"^\s*(?P<verb>\w+)(?:\s+(?P<rest>.*))?$", re.S)


def _summary(text: str) -> str:
    """``INSERT workflow_executions``, ``UPDATE workflow_executions SET status``, ``;``..."""
    text = text.strip()
    if text in ("", ";"):
        return "; (empty query: pool pre-ping)"
    match = _WORDS.match(text)
    if not match:
        return text[:40]
    verb = match.group("verb").upper()
    rest = match.group("rest") or ""
    if verb == "INSERT":
        table = re.match(r"INTO\s+(\S+)", rest, re.I)
        return f"INSERT {table.group(1) if table else '?'}"
    if verb == "UPDATE":
        m = re.match(r"(\S+)\s+SET\s+(\w+)", rest, re.I)
        return f"UPDATE {m.group(1)} SET {m.group(2)}" if m else "UPDATE ?"
    if verb == "DELETE":
        table = re.match(r"FROM\s+(\S+)", rest, re.I)
        return f"DELETE {table.group(1) if table else '?'}"
    if verb == "SELECT":
        if "pg_notify" in rest:
            return "SELECT pg_notify"
        table = re.search(r"\bFROM\s+(\w+)", rest, re.I)
        return f"SELECT {table.group(1) if table else rest[:30]}"
    return f"{verb} {rest[:30]}".strip()


def server_log(admin_url: str) -> Path | None:
    """The server's log file, if this process can read it."""
    with pg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT pg_current_logfile(), current_setting('data_directory')"
        ).fetchone()
        version = conn.execute("SHOW server_version_num").fetchone()
    if row and row[0]:
        path = Path(row[0]) if os.path.isabs(row[0]) else Path(row[1]) / row[0]
        if os.access(path, os.R_OK):
            return path
    major = int(version[0]) // 10000 if version else 15
    candidates = sorted(
        glob.glob(f"/var/log/postgresql/postgresql-{major}-*.log"), key=os.path.getmtime
    )
    for candidate in reversed(candidates):
        if os.access(candidate, os.R_OK):
            return Path(candidate)
    return None


class StatementLog:
    """``log_statement = 'all'`` on one database while a run happens; then the mix."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url = admin_url
        self.database = database
        self.path: Path | None = None
        self.offset = 0

    def start(self) -> None:
        self.path = server_log(self.admin_url)
        if self.path is None:
            return
        self.offset = self.path.stat().st_size
        with pg.connect(self.admin_url) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(
                    sql.Identifier(self.database)
                )
            )

    def stop(self, runs: int, exclude_pids: set[int | None]) -> dict[str, Any]:
        if self.path is None:
            return {"ok": False, "error": "no readable PostgreSQL server log"}
        with pg.connect(self.admin_url) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RESET log_statement").format(
                    sql.Identifier(self.database)
                )
            )
        with open(self.path, errors="replace") as fh:
            fh.seek(self.offset)
            text = fh.read()
        return analyse(text, self.database, runs, {str(p) for p in exclude_pids if p})


def analyse(text: str, database: str, runs: int, exclude: set[str]) -> dict[str, Any]:
    open_tx: dict[str, list[str]] = {}
    kinds: Counter[str] = Counter()
    commits = rollbacks = implicit = 0
    for line in text.splitlines():
        match = _LINE.search(line)
        if not match or match.group("db") != database or match.group("pid") in exclude:
            continue
        pid = match.group("pid")
        statement = match.group("sql").strip()
        word = statement.rstrip(";").strip().upper()
        if word.startswith(("BEGIN", "START TRANSACTION")):  # BEGIN ISOLATION LEVEL ... too
            open_tx[pid] = []
        elif word in ("COMMIT", "END"):
            body = open_tx.pop(pid, [])
            commits += 1
            kinds["COMMIT: " + " + ".join(dict.fromkeys(body)) if body else "COMMIT: (empty)"] += 1
        elif word == "ROLLBACK":
            open_tx.pop(pid, None)
            rollbacks += 1
        elif pid in open_tx:
            open_tx[pid].append(_summary(statement))
        else:
            implicit += 1
            kinds["implicit: " + _summary(statement)] += 1
    per_run = max(1, runs)
    return {
        "ok": True,
        "runs": runs,
        "explicit_commits_per_run": round(commits / per_run, 3),
        "implicit_transactions_per_run": round(implicit / per_run, 3),
        "rollbacks_per_run": round(rollbacks / per_run, 3),
        "transactions": [
            {"kind": kind, "count": count, "per_run": round(count / per_run, 3)}
            for kind, count in kinds.most_common(20)
        ],
    }
