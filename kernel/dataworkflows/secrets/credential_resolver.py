"""What actions and plugins see of credentials: one resolver
(:meth:`CredentialService.resolve`) that looks in the encrypted store for the run's tenant
first, then asks the ``resolve_secret`` hook (plugin providers, then the environment);
see :mod:`dataworkflows.secrets.credentials` for the order and the guarantees.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from dataworkflows.actions import Credential, CredentialError, Credentials
from dataworkflows.secrets.credentials import NAME_PATTERN, CredentialStore
from dataworkflows.secrets.keys import SecretKeyError

if TYPE_CHECKING:
    from dataworkflows.plugins.manager import PluginSet


class CredentialService:
    """Builds each attempt's ``ctx.credentials``: the store first, then the hook."""

    def __init__(self, store: CredentialStore, plugins: PluginSet) -> None:
        self.store = store
        self.plugins = plugins

    def for_tenant(self, tenant_id: str) -> RunCredentials:
        return RunCredentials(self, tenant_id)

    async def resolve(self, tenant_id: str, name: str) -> Credential:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise CredentialError(
                f"{name!r} is not a valid credential name", code="invalid_credential_name"
            )
        try:
            stored = await self.store.reveal(tenant_id, name)
        except SecretKeyError as exc:
            raise CredentialError(str(exc), code="credential_store_locked") from None
        if stored is not None:
            return stored
        value = await asyncio.to_thread(
            lambda: self.plugins.hook.resolve_secret(name=name, tenant_id=tenant_id)
        )
        if value is None:
            raise CredentialError(
                f"no credential named {name!r} is available to tenant {tenant_id!r}",
                code="credential_not_found",
            )
        if not isinstance(value, str):
            raise CredentialError(
                f"the provider of credential {name!r} returned a {type(value).__name__}, "
                "not a string",
                code="credential_invalid",
            )
        self.store.redactor.add(value, tenant_id)
        return Credential(name, value, (), source="provider")


class RunCredentials(Credentials):
    """``ctx.credentials`` for one attempt: bound to the run's tenant, cached by name."""

    def __init__(self, service: CredentialService, tenant_id: str) -> None:
        self._service = service
        self.tenant_id = tenant_id
        self.redactor = service.store.redactor
        self._cache: dict[str, Credential] = {}

    async def fetch(self, name: str) -> Credential:
        cached = self._cache.get(name)
        if cached is None:
            cached = await self._service.resolve(self.tenant_id, name)
            self._cache[name] = cached
        return cached
