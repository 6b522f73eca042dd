"""``python -m benchmarks.commit_trace serve ...``: the ``dataworkflows`` CLI with every
write transaction counted by call site (a diagnostic for the "commits per workflow" target).

It wraps :meth:`dataworkflows.db.database.Database.begin` (the kernel's one door to a
write transaction) to record which kernel functions opened each transaction, and listens
to SQLAlchemy's ``commit`` event to count the commits that went through SQLAlchemy at all.
On exit (SIGTERM is a graceful exit for ``serve``) it writes JSON to the file named by
``DWBENCH_COMMIT_TRACE``. Used by the profiled W1 run only; the measured runs use the plain
``dataworkflows`` command.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections import Counter
from typing import Any


def _site(depth: int = 4) -> str:
    """The innermost kernel frames that asked for the transaction (no source lookups)."""
    names: list[str] = []
    frame = sys._getframe(2)
    while frame is not None and len(names) < depth:
        filename = frame.f_code.co_filename
        if "/dataworkflows/" in filename and not filename.endswith("/db/database.py"):
            names.append(f"{os.path.basename(filename)[:-3]}.{frame.f_code.co_name}")
        frame = frame.f_back  # type: ignore[assignment]
    return " <- ".join(names) or "?"


def install(out_path: str) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from dataworkflows.db import database

    sites: Counter[str] = Counter()
    totals = {"sqlalchemy_commits": 0, "sqlalchemy_rollbacks": 0, "begin_calls": 0}
    original = database.Database.begin

    def begin(self: Any) -> Any:
        sites[_site()] += 1
        totals["begin_calls"] += 1
        return original(self)

    database.Database.begin = begin  # type: ignore[method-assign]

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        totals["sqlalchemy_commits"] += 1

    @event.listens_for(Engine, "rollback")
    def _rollback(conn: Any) -> None:
        totals["sqlalchemy_rollbacks"] += 1

    def dump() -> None:
        with open(out_path, "w") as fh:
            json.dump(totals | {"begin_sites": dict(sites.most_common())}, fh, indent=2)

    atexit.register(dump)


def main() -> None:
    out = os.environ.get("DWBENCH_COMMIT_TRACE")
    if out:
        install(out)
    from dataworkflows.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
