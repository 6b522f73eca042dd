"""Re-encryption of stored secrets (``dataworkflows credentials re-encrypt``, migration
``0007``): plan which stored values to seal under the first key (or, for the downgrade,
to open), for trigger configs and workflow definitions alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from dataworkflows.secrets.fields import DefinitionSecrets, trigger_fields

if TYPE_CHECKING:
    from dataworkflows.secrets.keys import KeyRing


class _Sealer(Protocol):
    def open(self, value: Any, keyring: KeyRing | None) -> Any: ...

    def reseal(self, value: Any, keyring: KeyRing) -> tuple[Any, bool]: ...


@dataclass
class ResealPlan:
    """What :func:`plan_reseal` would write, and what it could not do."""

    #: (the row's key, the new value)
    updates: list[tuple[Any, Any]] = field(default_factory=list)
    total: int = 0
    current: int = 0
    #: ``{"id", "error"}`` of rows whose secrets could not be decrypted
    failed: list[dict[str, str]] = field(default_factory=list)
    #: rows whose owner (a trigger type) is not installed: their secrets are unknown
    unknown_type: list[str] = field(default_factory=list)

    def summary(self, written: int) -> dict[str, Any]:
        """``{"total", "reencrypted", "current", "failed", "unknownType"}``."""
        return {
            "total": self.total,
            "reencrypted": written,
            "current": self.current + len(self.updates) - written,
            "failed": self.failed,
            "unknownType": self.unknown_type,
        }


def plan_reseal(
    rows: list[tuple[Any, Any, _Sealer | None]], keyring: KeyRing, *, decrypt: bool = False
) -> ResealPlan:
    """Plan the re-encryption of stored values: ``rows`` are (key, stored value, its
    sealer or None when its owner is unknown). Plaintext secrets and ones under an older
    key are sealed under the first key; ``decrypt`` does the opposite (the downgrade of
    migration 0007): every sealed secret becomes plaintext again."""
    from dataworkflows.secrets.keys import SecretKeyError

    plan = ResealPlan(total=len(rows))
    for key, value, sealer in rows:
        if sealer is None:
            plan.unknown_type.append(str(key))
            continue
        try:
            if decrypt:
                new = sealer.open(value, keyring)
                changed = new != value
            else:
                new, changed = sealer.reseal(value, keyring)
        except SecretKeyError as exc:
            plan.failed.append({"id": str(key), "error": str(exc)})
            continue
        if changed:
            plan.updates.append((key, new))
        else:
            plan.current += 1
    return plan


def trigger_rows(
    rows: list[Mapping[str, Any]], models: Mapping[str, type[BaseModel]]
) -> list[tuple[Any, Any, _Sealer | None]]:
    """:func:`plan_reseal` rows of ``workflow_triggers`` rows (``id``, ``tenant_id``,
    ``type``, ``config``); the key is the trigger id."""
    out: list[tuple[Any, Any, _Sealer | None]] = []
    for row in rows:
        model = models.get(row["type"])
        sealer = trigger_fields(model, row["tenant_id"], str(row["id"])) if model else None
        out.append((str(row["id"]), row["config"], sealer))
    return out


def definition_rows(
    rows: list[Mapping[str, Any]], secrets: DefinitionSecrets
) -> list[tuple[Any, Any, _Sealer | None]]:
    """:func:`plan_reseal` rows of ``workflow_definitions`` rows (``workflow_id``,
    ``version``, ``definition``); the key is ``(workflow_id, version)``. Nodes of an
    action type that is not installed are left as they are."""
    return [((r["workflow_id"], r["version"]), r["definition"], secrets) for r in rows]
