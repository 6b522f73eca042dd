"""The data step of migration ``0007``: trigger secrets stored in plaintext get encrypted.

Which fields are secret is known only to the plugin owning each trigger type (see
:mod:`dataworkflows.secret_fields`), so this step needs the trigger types and the key:

* from the kernel that migrates (``Kernel.start`` passes them as Alembic attributes
  ``trigger_models`` and ``secret_key``), or
* when run by ``dataworkflows db upgrade``: the installed plugins (entry points, with
  ``DATAWORKFLOWS_LOAD_PLUGINS``) and the key of the environment (``DATAWORKFLOWS_SECRET_KEY``,
  else the SQLite key file, generated if missing).

It asks for neither when ``workflow_triggers`` has no row. Rows of a type whose plugin is
not installed are left as they are (logged); ``dataworkflows credentials re-encrypt`` seals
them once the plugin is back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, select, update

from dataworkflows.db.trigger_models import workflow_triggers

log = logging.getLogger(__name__)


def _context(
    connection: Connection, attributes: Mapping[str, Any]
) -> tuple[Any, dict[str, type[BaseModel]]]:
    from dataworkflows.credentials import KeyRing, SecretKeyError, resolve_secret_key
    from dataworkflows.settings import Settings

    models = attributes.get("trigger_models")
    secret_key = attributes.get("secret_key")
    settings = None
    if models is None or secret_key is None:
        url = connection.engine.url.render_as_string(hide_password=False)
        settings = Settings.from_env(database_url=url)
    if models is None:
        from dataworkflows.plugins import load_plugins

        assert settings is not None
        plugins = load_plugins(allow=settings.load_plugins, modules=settings.plugin_modules)
        models = {name: entry.cls.Config for name, entry in plugins.triggers.items()}
    if secret_key is None:
        assert settings is not None
        secret_key, missing = resolve_secret_key(settings)
        if not secret_key:
            raise SecretKeyError(
                f"migration 0007 encrypts the secret fields of stored triggers: {missing}"
            )
    return KeyRing.from_setting(secret_key), dict(models)


def migrate_trigger_secrets(
    connection: Connection, attributes: Mapping[str, Any], *, decrypt: bool
) -> None:
    """Encrypt (``decrypt=False``) or decrypt every declared secret of every trigger row."""
    from dataworkflows.secret_fields import reseal_trigger_rows

    t = workflow_triggers
    rows = [
        dict(r._mapping)
        for r in connection.execute(
            select(t.c.id, t.c.tenant_id, t.c.type, t.c.config, t.c.updated_at)
        )
    ]
    if not rows:
        return
    keyring, models = _context(connection, attributes)
    plan = reseal_trigger_rows(rows, models, keyring, decrypt=decrypt)
    if plan.failed:
        raise RuntimeError(
            "cannot "
            + ("decrypt" if decrypt else "encrypt")
            + " the secrets of some triggers: "
            + "; ".join(f"{f['triggerId']}: {f['error']}" for f in plan.failed)
        )
    for trigger_id in plan.unknown_type or ():
        log.warning(
            "trigger %s: its type's plugin is not installed, its secret fields are left as "
            "they are (run `dataworkflows credentials re-encrypt` once it is back)",
            trigger_id,
        )
    for trigger_id, _, config in plan.updates:
        connection.execute(update(t).where(t.c.id == trigger_id).values(config=config))
    log.info(
        "%s the secret fields of %d trigger(s)",
        "decrypted" if decrypt else "encrypted",
        len(plan.updates),
    )


__all__ = ["migrate_trigger_secrets"]
