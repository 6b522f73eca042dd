"""Running the Alembic migrations that ship inside the kernel package.

The top-level ``migrations/`` folder of the repository is packaged into the wheel as
``dataworkflows/migrations``; in a checkout (or an editable install) it is found beside
the ``kernel/`` folder instead.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from dataworkflows.db.database import sync_url


def migrations_dir() -> Path:
    packaged = Path(str(resources.files("dataworkflows"))) / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise FileNotFoundError(
        "the dataworkflows migrations are missing: reinstall the dataworkflows package"
    )


def alembic_config(url: str, **attributes: Any) -> Config:
    """The Alembic config for ``url``. ``attributes`` reach the migrations (data
    migrations read ``secret_key`` and ``trigger_models``, see
    :mod:`dataworkflows.service.seal_secrets`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # Passed as an attribute, not a main option: set_main_option would %-interpolate it.
    cfg.attributes["database_url"] = sync_url(url)
    cfg.attributes.update({k: v for k, v in attributes.items() if v is not None})
    return cfg


def upgrade(url: str, revision: str = "heads", **attributes: Any) -> None:
    command.upgrade(alembic_config(url, **attributes), revision)


def downgrade(url: str, revision: str, **attributes: Any) -> None:
    command.downgrade(alembic_config(url, **attributes), revision)


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def is_up_to_date(url: str) -> bool:
    return current_revisions(url) == head_revisions()
