"""The kernel: one object that owns the database, the plugins and the run machinery.

    kernel = Kernel(Settings.from_env())
    await kernel.start()        # open the database (migrating SQLite), build registries
    ...                         # kernel.service, kernel.ledger, kernel.worker
    await kernel.close()

``dataworkflows serve`` wraps one in the aiohttp app; ``dataworkflows run`` and the tests
use it directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import aiohttp

from dataworkflows.common.clock import Clock, SystemClock
from dataworkflows.common.log_redaction import install_log_redaction
from dataworkflows.common.redaction import Redactor
from dataworkflows.common.redaction import redactor as process_redactor
from dataworkflows.db import migrate
from dataworkflows.db.database import Database
from dataworkflows.engine.conductor import Conductor
from dataworkflows.engine.documents import DocumentRenderer
from dataworkflows.engine.templating import TemplateEngine, TemplateLimits, new_environment
from dataworkflows.engine.worker import Worker
from dataworkflows.events import RunEvent
from dataworkflows.ledger.fairness import TenantCaps
from dataworkflows.ledger.resources import ResourceStore
from dataworkflows.ledger.retention import Pruner, RetentionPolicy
from dataworkflows.ledger.run_ledger import RunLedger
from dataworkflows.measurements import EngineMeasurement
from dataworkflows.plugin_api import PluginAPI
from dataworkflows.plugins.manager import PluginSet, load_plugins
from dataworkflows.secrets.credential_resolver import CredentialService
from dataworkflows.secrets.credentials import CredentialStore
from dataworkflows.secrets.fields import DefinitionSecrets, plaintexts
from dataworkflows.secrets.keys import resolve_secret_key
from dataworkflows.service.document_templates import DocumentTemplateService
from dataworkflows.service.event_hub import EventHub
from dataworkflows.service.pruning import PruneLoop
from dataworkflows.service.rate_limits import RateLimiter
from dataworkflows.service.scheduler import Scheduler
from dataworkflows.service.store import WorkflowStore
from dataworkflows.service.triggers import TriggerService
from dataworkflows.service.workflow_templates import WorkflowTemplateService
from dataworkflows.service.workflows import WorkflowService
from dataworkflows.settings import Settings

log = logging.getLogger(__name__)


class SchemaOutOfDate(RuntimeError):
    """The database is not migrated to the kernel's schema."""


class Kernel:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        plugins: PluginSet | None = None,
        extra_plugins: Iterable[Any] = (),
        entrypoints: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.plugins = plugins or load_plugins(
            entrypoints=entrypoints,
            allow=self.settings.load_plugins,
            extra=extra_plugins,
            modules=self.settings.plugin_modules,
            trace=self.settings.trace_plugins,
        )
        self.clock: Clock = clock or SystemClock()
        # the one factory tests use too: production and tests render alike
        env = new_environment()
        self.plugins.hook.prepare_jinja2_environment(env=env)
        self.templates = TemplateEngine(
            env,
            TemplateLimits(
                max_operations=self.settings.template_max_operations,
                max_size=self.settings.template_max_size,
                timeout=self.settings.template_timeout,
                workers=self.settings.template_workers,
                memory_mb=self.settings.template_memory_mb,
                cache_size=self.settings.template_cache_size,
            ),
        )
        self.db = Database(
            self.settings.database_url,
            sqlite_synchronous=self.settings.sqlite_synchronous,
            listen_url=self.settings.listen_database_url,
            replica_url=self.settings.read_database_url,
            prepared_statements=self.settings.effective_pg_prepared_statements,
        )
        # document templates (docs/templates.md): one renderer for the preview route and
        # ctx.render_document, with the plugins' filters, under the same template budget
        self.documents = DocumentTemplateService(
            self.db,
            self.clock,
            DocumentRenderer(
                self.templates.limits,
                max_bytes=self.settings.document_max_bytes,
                prepare=lambda env: self.plugins.hook.prepare_jinja2_environment(env=env),
            ),
        )
        self.store = WorkflowStore(self.db, self.clock)
        #: this kernel's secrets, of every tenant (dataworkflows.common.redaction): redacted
        #: from its ledger and, while the kernel lives, from every log record of the process
        self.redactor = Redactor(parent=process_redactor)
        install_log_redaction(self.redactor)
        # connectors: tenant-scoped credentials (secrets redacted) and resource links
        secret_key, missing = resolve_secret_key(self.settings)
        self._secret_key = secret_key
        self.credentials = CredentialService(
            CredentialStore(
                self.db, self.clock, secret_key, missing=missing, redactor=self.redactor
            ),
            self.plugins,
        )
        if self.credentials.store.key_problem:
            log.log(
                logging.ERROR if secret_key else logging.WARNING,
                "credential store disabled: %s",
                self.credentials.store.key_problem,
            )
        # secret parameters that actions declare are encrypted in stored definitions
        self.definition_secrets = DefinitionSecrets(self.action_params())
        self.store.open_definition = self._open_definition
        self.resources = ResourceStore(self.db)
        #: API and trigger intake rate limits (docs/limits.md)
        self.rate_limits = RateLimiter.for_database(
            self.db, reserve_seconds=self.settings.rate_limit_reserve_seconds
        )
        # engine measurements are built only when some plugin observes them
        measure = self._measure if self.plugins.hook.on_engine_measurement.get_hookimpls() else None
        self.ledger = RunLedger(
            self.db,
            self.clock,
            observe=self._observe,
            lease_seconds=self.settings.lease_seconds,
            max_recoveries=self.settings.max_recoveries,
            queue_limit=self.settings.ledger_queue_limit,
            redactor=self.redactor,
            measure=measure,
            tenant_caps=TenantCaps.from_settings(self.settings),
        )
        self._http: aiohttp.ClientSession | None = None
        self.conductor = Conductor(
            ledger=self.ledger,
            store=self.store,
            plugins=self.plugins,
            templates=self.templates,
            http=self.http,
            clock=self.clock,
            default_action_timeout=self.settings.default_action_timeout,
            settings=self.settings,
            action_services=self.action_services,
        )
        self.worker = Worker(
            self.ledger,
            self.conductor,
            concurrency=self.settings.worker_concurrency,
            poll_interval=self.settings.poll_interval,
            heartbeat_interval=self.settings.heartbeat_interval,
        )
        #: wakes this process's live event streams (GET /api/v1/events/stream)
        self.events = EventHub(self.db, poll_interval=self.settings.poll_interval)
        self.service = WorkflowService(
            store=self.store,
            ledger=self.ledger,
            plugins=self.plugins,
            templates=self.templates,
            intake=self.worker,
            secrets=self.definition_secrets,
            credentials=self.credentials.store,
            max_nesting_depth=self.settings.default_max_nesting_depth,
        )
        self.workflow_templates = WorkflowTemplateService(self.db, self.clock, self.service)
        self.triggers = TriggerService(
            db=self.db,
            clock=self.clock,
            plugins=self.plugins,
            templates=self.templates,
            store=self.store,
            service=self.service,
            credentials=self.credentials,
        )
        self.scheduler = Scheduler(
            self.triggers,
            self.clock,
            max_sleep=self.settings.scheduler_max_sleep,
            lease=self.settings.scheduler_lease,
        )
        self._scheduler_task: asyncio.Task[None] | None = None
        self.pruner = Pruner(
            self.db,
            RetentionPolicy(
                days=self.settings.retention_days,
                failed_days=self.settings.retention_failed_days,
                max_runs=self.settings.retention_max_runs,
            ),
            batch_size=self.settings.prune_batch_size,
        )
        self.prune_loop = PruneLoop(self.pruner, self.clock, self.settings.prune_interval_seconds)
        self._prune_task: asyncio.Task[None] | None = None
        self.plugin_api = PluginAPI(
            clock=self.clock,
            settings=self.settings,
            runs=self.service,
            triggers=self.triggers,
            credentials=self.credentials,
            queue=self.ledger,
            measure=measure,
            rate_limits=self.rate_limits,
        )
        self.triggers.plugin_api = self.plugin_api
        self._worker_task: asyncio.Task[None] | None = None
        #: whether ``on_engine_start`` was called (once per kernel)
        self._engine_started = False

    async def start(self) -> None:
        """Migrate (SQLite, or when asked) or check the schema, then get ready to serve."""
        url = self.db.url
        if self.settings.should_auto_migrate:
            await asyncio.to_thread(
                migrate.upgrade,
                url,
                secret_key=self._secret_key,
                trigger_models=self.trigger_configs(),
                action_models=self.action_params(),
            )
        elif not await asyncio.to_thread(migrate.is_up_to_date, url):
            raise SchemaOutOfDate(
                "the database schema is not up to date: run `dataworkflows db upgrade`"
            )

    def trigger_configs(self) -> dict[str, Any]:
        """Trigger type → its ``Config`` model (where its secret fields are declared)."""
        return {name: entry.cls.Config for name, entry in self.plugins.triggers.items()}

    def action_params(self) -> dict[str, Any]:
        """Action type → its ``Params`` model (where its secret parameters are declared)."""
        return {name: entry.cls.Params for name, entry in self.plugins.actions.items()}

    def _open_definition(self, definition: dict[str, Any]) -> dict[str, Any]:
        """A stored definition with its secret parameters decrypted (and registered with
        the redactor, so rendered parameters, outputs and logs never show them)."""
        opened = self.definition_secrets.open(definition, self.credentials.store.keyring_or_none)
        self.redactor.add_all(plaintexts(self.definition_secrets.values(opened)))
        return dict(opened)

    def action_services(self, *, tenant_id: str, workflow_id: str) -> dict[str, Any]:
        """The :class:`~dataworkflows.ActionContext` fields of an attempt that come from
        kernel services: ``credentials`` and ``documents`` (the run's tenant), ``resources``
        (the run's workflow) and ``settings`` (plugin settings)."""
        return {
            "credentials": self.credentials.for_tenant(tenant_id),
            "documents": self.documents.for_tenant(tenant_id),
            "resources": self.resources.for_workflow(workflow_id),
            "settings": self.settings.extra,
        }

    def http(self) -> aiohttp.ClientSession:
        """The shared client session actions use (created on first use)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    def engine_start(self) -> None:
        """Call the plugins' ``on_engine_start`` (once per kernel): before the worker runs."""
        if self._engine_started:
            return
        self._engine_started = True
        try:
            self.plugins.hook.on_engine_start(kernel=self.plugin_api)
        except Exception:
            log.exception("an on_engine_start implementation failed")

    def start_worker(self) -> asyncio.Task[None]:
        """Run the worker in the background (after :meth:`engine_start`)."""
        self.engine_start()
        if self._worker_task is None or self._worker_task.done():
            self._worker_task = asyncio.create_task(self.worker.run(), name="dataworkflows-worker")
        return self._worker_task

    async def stop_worker(self, grace: float | None = None) -> None:
        if grace is None:
            grace = self.settings.shutdown_grace
        if self._worker_task is not None:
            await self.worker.stop(grace)
            await self._worker_task
            self._worker_task = None

    def start_scheduler(self) -> asyncio.Task[None]:
        """Run the scheduler loop (time-based triggers) in the background."""
        if self._scheduler_task is None or self._scheduler_task.done():
            self.scheduler.rearm()
            self._scheduler_task = asyncio.create_task(
                self.scheduler.run(), name="dataworkflows-scheduler"
            )
        return self._scheduler_task

    def start_pruner(self) -> asyncio.Task[None] | None:
        """Run the background pruner (retention) unless its interval is 0."""
        if self.settings.prune_interval_seconds <= 0:
            return None
        if self._prune_task is None or self._prune_task.done():
            self._prune_task = asyncio.create_task(
                self.prune_loop.run(), name="dataworkflows-pruner"
            )
        return self._prune_task

    async def stop_scheduler(self) -> None:
        if self._scheduler_task is not None:
            self.scheduler.stop()
            await self._scheduler_task
            self._scheduler_task = None

    async def close(self) -> None:
        """Stop the scheduler and the worker, finish pending writes, close connections.

        Every task the kernel started is over when this returns.
        """
        await self.stop_scheduler()
        if self._prune_task is not None:
            self.prune_loop.stop()
            await self._prune_task
            self._prune_task = None
        await self.stop_worker()
        await self.events.close()
        await self.ledger.close()
        await self.conductor.close()
        if self._http is not None:
            await self._http.close()
        await self.templates.close()
        await self.db.dispose()

    def _observe(self, event: RunEvent) -> None:
        self.events.publish(event)
        self.plugins.hook.on_run_event(event=event)

    def _measure(self, measurement: EngineMeasurement) -> None:
        try:
            self.plugins.hook.on_engine_measurement(measurement=measurement)
        except Exception:
            log.exception("an on_engine_measurement observer failed (%s)", measurement.name)
