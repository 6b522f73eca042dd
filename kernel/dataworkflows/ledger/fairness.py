"""Per-tenant concurrency caps: how many runs of one tenant may be ``Running`` at once.

Read from ``DATAWORKFLOWS_TENANT_MAX_RUNNING`` (every tenant; 0: no cap) and
``DATAWORKFLOWS_TENANT_MAX_RUNNING_OVERRIDES`` (``tenant=cap,tenant=cap``; 0: no cap for
that tenant). The claim statement (:func:`dataworkflows.ledger.statements.claim_statement`)
turns them into one ``CASE`` over the tenant column, built once per process. See
docs/limits.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, literal

from dataworkflows.settings import Settings, parse_tenant_overrides

#: what "no cap" is in SQL: more runs than any database holds at once
UNCAPPED = 2**31 - 1


@dataclass(frozen=True)
class TenantCaps:
    """The default cap and the per-tenant overrides (0: no cap)."""

    default: int = 0
    overrides: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantCaps | None:
        """The caps the settings give, or None when no tenant has one (the claim then
        counts no running runs at all)."""
        overrides = parse_tenant_overrides(settings.tenant_max_running_overrides)
        if settings.tenant_max_running == 0 and not any(overrides.values()):
            return None
        return cls(settings.tenant_max_running, overrides)

    def cap_for(self, tenant_id: str) -> int | None:
        """The tenant's cap, or None when it has none."""
        return self.overrides.get(tenant_id, self.default) or None

    def expression(self, tenant_column: Any) -> Any:
        """SQL: the cap of the row's tenant (a large number where there is none)."""
        otherwise = literal(self.default or UNCAPPED)
        if not self.overrides:
            return otherwise
        return case(
            *(
                (tenant_column == name, literal(cap or UNCAPPED))
                for name, cap in self.overrides.items()
            ),
            else_=otherwise,
        )
