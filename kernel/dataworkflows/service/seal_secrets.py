"""The data step of migration ``0007``: secret fields stored in plaintext get encrypted.

Two places hold plugin-declared secrets (see :mod:`dataworkflows.secrets.fields`): trigger
configs (``workflow_triggers.config``) and the parameters of workflow definitions
(``workflow_definitions.definition``, whose checksum is then recomputed over the sealed
form so that it holds no digest of a plaintext secret). Which fields are secret is known
only to the plugins, so this step needs their models and the key:

* from the kernel that migrates (``Kernel.start`` passes Alembic attributes
  ``trigger_models``, ``action_models`` and ``secret_key``), or
* when run by ``dataworkflows db upgrade``: the installed plugins (entry points, with
  ``DATAWORKFLOWS_LOAD_PLUGINS``) and the key of the environment (``DATAWORKFLOWS_SECRET_KEY``,
  else the SQLite key file, generated if missing).

The key is asked for only when a secret needs encrypting (or decrypting). Triggers of a
type whose plugin is not installed, and nodes of such actions, are left as they are
(logged); ``dataworkflows credentials re-encrypt`` seals them once the plugin is back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, select, update

from dataworkflows.db.models import workflow_definitions
from dataworkflows.db.trigger_models import workflow_triggers

log = logging.getLogger(__name__)


class _Context:
    """The plugin models and the key, found only when needed."""

    def __init__(self, connection: Connection, attributes: Mapping[str, Any]) -> None:
        self.connection = connection
        self.attributes = attributes
        self._settings: Any = None
        self._plugins: Any = None

    def settings(self) -> Any:
        from dataworkflows.settings import Settings

        if self._settings is None:
            url = self.connection.engine.url.render_as_string(hide_password=False)
            self._settings = Settings.from_env(database_url=url)
        return self._settings

    def plugins(self) -> Any:
        from dataworkflows.plugins.manager import load_plugins

        if self._plugins is None:
            settings = self.settings()
            self._plugins = load_plugins(
                allow=settings.load_plugins, modules=settings.plugin_modules
            )
        return self._plugins

    def trigger_models(self) -> dict[str, type[BaseModel]]:
        models = self.attributes.get("trigger_models")
        if models is None:
            models = {n: e.cls.Config for n, e in self.plugins().triggers.items()}
        return dict(models)

    def action_models(self) -> dict[str, type[BaseModel]]:
        models = self.attributes.get("action_models")
        if models is None:
            models = {n: e.cls.Params for n, e in self.plugins().actions.items()}
        return dict(models)

    def keyring(self) -> Any:
        from dataworkflows.secrets.keys import KeyRing, SecretKeyError, resolve_secret_key

        secret_key = self.attributes.get("secret_key")
        if secret_key is None:
            secret_key, missing = resolve_secret_key(self.settings())
            if not secret_key:
                raise SecretKeyError(f"migration 0007 handles stored secret fields: {missing}")
        return KeyRing.from_setting(secret_key)


def _plan(context: _Context, rows: list[Any], *, decrypt: bool, what: str) -> Any:
    """The reseal plan of ``rows`` (see :func:`~dataworkflows.secrets.reseal.plan_reseal`),
    asking for the key only if some value has a secret."""
    from dataworkflows.secrets.fields import is_sealed
    from dataworkflows.secrets.reseal import plan_reseal

    def has_secret(value: Any, sealer: Any) -> bool:
        found = sealer.values(value) if sealer is not None else {}
        return any(is_sealed(v) == decrypt for v in found.values())

    if not any(has_secret(value, sealer) for _, value, sealer in rows):
        return None
    plan = plan_reseal(rows, context.keyring(), decrypt=decrypt)
    if plan.failed:
        raise RuntimeError(
            f"cannot {'decrypt' if decrypt else 'encrypt'} the secrets of some {what}: "
            + "; ".join(f"{f['id']}: {f['error']}" for f in plan.failed)
        )
    return plan


def migrate_secret_fields(
    connection: Connection, attributes: Mapping[str, Any], *, decrypt: bool
) -> None:
    """Encrypt (``decrypt=False``) or decrypt every declared secret of every trigger
    config and every stored definition."""
    from dataworkflows.engine.definitions import checksum
    from dataworkflows.secrets.fields import DefinitionSecrets
    from dataworkflows.secrets.reseal import definition_rows, trigger_rows

    context = _Context(connection, attributes)
    t = workflow_triggers
    triggers = [
        dict(r._mapping)
        for r in connection.execute(select(t.c.id, t.c.tenant_id, t.c.type, t.c.config))
    ]
    if triggers:
        rows = trigger_rows(triggers, context.trigger_models())
        for trigger_id, _, sealer in rows:
            if sealer is None:
                log.warning(
                    "trigger %s: its type is not installed, its secret fields are left as "
                    "they are (run `dataworkflows credentials re-encrypt` once it is back)",
                    trigger_id,
                )
        plan = _plan(context, rows, decrypt=decrypt, what="triggers")
        for trigger_id, config in plan.updates if plan else ():
            connection.execute(update(t).where(t.c.id == trigger_id).values(config=config))
    d = workflow_definitions
    definitions = [
        dict(r._mapping)
        for r in connection.execute(select(d.c.workflow_id, d.c.version, d.c.definition))
    ]
    if definitions:
        secrets = DefinitionSecrets(context.action_models())
        plan = _plan(
            context, definition_rows(definitions, secrets), decrypt=decrypt, what="definitions"
        )
        for (workflow_id, version), definition in plan.updates if plan else ():
            values: dict[str, Any] = {"definition": definition}
            if not decrypt:  # no digest of a plaintext secret stays in the checksum
                values["checksum"] = checksum(definition)
            connection.execute(
                update(d)
                .where(d.c.workflow_id == workflow_id, d.c.version == version)
                .values(**values)
            )


__all__ = ["migrate_secret_fields"]
