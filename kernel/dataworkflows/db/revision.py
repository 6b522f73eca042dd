"""Developer helper: autogenerate a new migration revision.

    uv run python -m dataworkflows.db.revision "add triggers table"

It upgrades a scratch SQLite database to the current heads and compares it with the
models. Review the generated file before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from dataworkflows.db import migrate


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit('usage: python -m dataworkflows.db.revision "message"')
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'scratch.db'}"
        migrate.upgrade(url)
        cfg = migrate.alembic_config(url)
        cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
        command.revision(cfg, message=argv[0], autogenerate=True)


if __name__ == "__main__":
    main(sys.argv[1:])
