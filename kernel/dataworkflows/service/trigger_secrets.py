"""Secret fields of trigger configs: sealed (encrypted) when written, opened for the
plugin and registered with the redactor, re-encrypted on key rotation. Part of
:class:`~dataworkflows.service.triggers.TriggerService`, which inherits
:class:`TriggerSecrets`; the field machinery is :mod:`dataworkflows.secrets.fields`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update

from dataworkflows.common.redaction import Redactor
from dataworkflows.common.redaction import redactor as process_redactor
from dataworkflows.db.trigger_models import workflow_triggers
from dataworkflows.secrets.fields import SecretFields, plaintexts, trigger_fields
from dataworkflows.secrets.keys import SecretKeyError
from dataworkflows.secrets.reseal import plan_reseal, trigger_rows
from dataworkflows.service.trigger_validation import problem
from dataworkflows.triggers import TriggerType

log = logging.getLogger(__name__)


class TriggerSecrets:
    """The secret-field half of the trigger service."""

    # -- secret fields (encrypted at rest, see dataworkflows.secrets.fields) ---------------

    def secret_fields(self, cls: type[TriggerType], row: Mapping[str, Any]) -> SecretFields:
        return trigger_fields(cls.Config, row["tenant_id"], str(row["id"]))

    @staticmethod
    def _check_masks(fields: SecretFields, config: Any, problems: list[dict[str, str]]) -> None:
        """A secret sent as ``"**********"`` where none is stored is refused: it would
        become the secret."""
        for where in fields.masked_without_value(config):
            problems.append(
                problem(
                    "$.config" + where[1:],
                    "masked_secret",
                    '"**********" keeps a stored secret, and none is stored here: send the '
                    "secret itself",
                )
            )

    @property
    def _redactor(self) -> Redactor:
        """The kernel's redactor (the process-wide one without a credential service)."""
        return self.credentials.store.redactor if self.credentials else process_redactor

    def _seal(self, fields: SecretFields, config: Any) -> Any:
        """The config to store: its secrets encrypted (503 ``secret_key_missing`` when
        there is a secret and no key: nothing is written)."""
        secrets = fields.values(config)
        if not secrets:
            return config
        keyring = self.credentials.store.keyring_for_api() if self.credentials else None
        self._redactor.add_all(plaintexts(secrets))
        return fields.seal(config, keyring)

    def open_config(self, fields: SecretFields, config: Any) -> Any:
        """The stored config with its secrets decrypted (registered with the redactor).
        Raises :class:`~dataworkflows.secrets.keys.SecretKeyError`."""
        keyring = self.credentials.store.keyring_or_none if self.credentials else None
        opened = fields.open(config, keyring)
        self._redactor.add_all(plaintexts(fields.values(opened)))
        return opened

    def _open_for_api(self, fields: SecretFields, config: Any) -> Any:
        try:
            return self.open_config(fields, config)
        except SecretKeyError as exc:
            from dataworkflows.secrets.credentials import CredentialStoreUnavailable

            raise CredentialStoreUnavailable(
                f"the trigger's secret fields cannot be decrypted: {exc}",
                code="secret_key_missing",
            ) from None

    async def re_encrypt(self) -> dict[str, Any]:
        """Encrypt every trigger secret still in plaintext and re-encrypt every one not
        under the first key (``dataworkflows credentials re-encrypt``). Returns
        ``{"total", "reencrypted", "current", "failed", "unknownType"}``."""
        assert self.credentials is not None
        keyring = self.credentials.store.keyring()
        t = workflow_triggers
        async with self.db.connect() as conn:
            rows = [
                dict(r._mapping)
                for r in await conn.execute(
                    select(t.c.id, t.c.tenant_id, t.c.type, t.c.config, t.c.updated_at)
                )
            ]
        models = {name: entry.cls.Config for name, entry in self.plugins.triggers.items()}
        plan = plan_reseal(trigger_rows(rows, models), keyring)
        read_at = {str(row["id"]): row["updated_at"] for row in rows}
        written = 0
        for trigger_id, config in plan.updates:
            async with self.db.begin() as conn:
                result = await conn.execute(
                    update(t)
                    .where(t.c.id == trigger_id, t.c.updated_at == read_at[trigger_id])
                    .values(config=config)
                )
            written += result.rowcount  # 0: changed meanwhile, by a writer that sealed it
        return plan.summary(written)
