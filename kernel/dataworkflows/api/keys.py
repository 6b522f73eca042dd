"""Typed keys for state kept on the aiohttp application, and what the API needs of the kernel.

The API never imports the composition root (:mod:`dataworkflows.kernel`): it is handed an
object with the services below (in production the :class:`~dataworkflows.kernel.Kernel`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from dataworkflows.common.clock import Clock
    from dataworkflows.db.database import Database
    from dataworkflows.ledger.resources import ResourceStore
    from dataworkflows.ledger.run_ledger import RunLedger
    from dataworkflows.plugin_api import PluginAPI
    from dataworkflows.plugins.manager import PluginSet
    from dataworkflows.secrets.credential_resolver import CredentialService
    from dataworkflows.service.document_templates import DocumentTemplateService
    from dataworkflows.service.event_hub import EventHub
    from dataworkflows.service.rate_limits import RateLimiter
    from dataworkflows.service.store import WorkflowStore
    from dataworkflows.service.triggers import TriggerService
    from dataworkflows.service.workflow_templates import WorkflowTemplateService
    from dataworkflows.service.workflows import WorkflowService
    from dataworkflows.settings import Settings


class ApiServices(Protocol):
    """The kernel as the HTTP API sees it: its services and its life cycle."""

    settings: Settings
    clock: Clock
    db: Database
    plugins: PluginSet
    plugin_api: PluginAPI
    service: WorkflowService
    store: WorkflowStore
    triggers: TriggerService
    credentials: CredentialService
    resources: ResourceStore
    ledger: RunLedger
    events: EventHub
    documents: DocumentTemplateService
    workflow_templates: WorkflowTemplateService
    rate_limits: RateLimiter

    async def start(self) -> None: ...

    def start_worker(self) -> asyncio.Task[None]: ...

    def start_scheduler(self) -> asyncio.Task[None]: ...

    def start_pruner(self) -> asyncio.Task[None] | None: ...

    async def close(self) -> None: ...


kernel_key = web.AppKey("dataworkflows_kernel", ApiServices)
