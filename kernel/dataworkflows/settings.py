"""Engine settings, read from ``DATAWORKFLOWS_*`` environment variables.

Every setting is listed in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

#: settings that were renamed: setting the old name warns at start-up (it does nothing)
RENAMED = {"DATAWORKFLOWS_SCHEDULER_INTERVAL": "DATAWORKFLOWS_SCHEDULER_MAX_SLEEP"}
_RENAMED_NAMES = {old.removeprefix("DATAWORKFLOWS_").lower() for old in RENAMED}

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./dataworkflows.db"


EVENT_LOOPS = ("auto", "uvloop", "asyncio")
#: accepted values of ``DATAWORKFLOWS_LOG_FORMAT`` (dataworkflows.common.logformat)
LOG_FORMATS = ("auto", "json", "console")
#: accepted values of ``DATAWORKFLOWS_SQLITE_SYNCHRONOUS`` (SQLite's ``PRAGMA synchronous``)
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")
#: accepted values of ``DATAWORKFLOWS_AUTH_MODE`` (docs/auth.md)
AUTH_MODES = ("loose", "strict")
#: the most clock skew a JWT's exp / nbf / iat may be given (seconds)
MAX_JWT_LEEWAY = 300.0


class SettingsError(ValueError):
    """A ``DATAWORKFLOWS_*`` variable has a value the engine cannot use."""


@dataclass(frozen=True)
class Settings:
    """All tunables of one engine process. Build with :meth:`from_env` or directly in tests."""

    database_url: str = DEFAULT_DATABASE_URL
    #: PostgreSQL URL of the ``LISTEN`` connections (wake-ups, cancels, live events); None:
    #: ``database_url``. Set it when ``database_url`` goes through PgBouncer in transaction
    #: mode, which does not deliver notifications: LISTEN needs a direct session.
    listen_database_url: str | None = None
    #: PostgreSQL URL of a read replica for the API's and console's reads of run history
    #: (runs, their attempts, events, logs, variables, children; docs/scaling.md). None:
    #: every read goes to ``database_url``. The engine's own reads never use it.
    read_database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    #: seconds an Idempotency-Key's stored response is replayed (docs/api.md)
    idempotency_ttl_seconds: float = 86400.0
    #: seconds a request holds its Idempotency-Key before another process may take it over
    idempotency_lock_seconds: float = 60.0
    #: None: SQLite databases upgrade themselves on start, PostgreSQL ones must be
    #: upgraded with ``dataworkflows db upgrade``. True/False forces either way.
    auto_migrate: bool | None = None
    #: Comma-separated distribution names to load; None loads every installed plugin,
    #: an empty string loads none.
    load_plugins: str | None = None
    #: Comma-separated importable module names registered as plugins without packaging
    #: (like ``pytest -p``): handy for a local plugin and for tests' worker processes.
    plugin_modules: str | None = None
    trace_plugins: bool = False
    worker_concurrency: int = 16
    #: worker processes ``serve`` starts beside the API (``serve --workers``); None: the
    #: CPU cores on PostgreSQL, 0 on SQLite; 0: one worker inside the API process
    serve_workers: int | None = None
    poll_interval: float = 1.0
    #: seconds a claimed run stays leased without a write or heartbeat
    lease_seconds: float = 30.0
    #: seconds between lease renewals of a worker's runs (keep well under lease_seconds)
    heartbeat_interval: float = 10.0
    #: recoveries (claims after an expired lease) before a run goes to the dead letters
    max_recoveries: int = 3
    #: compiled workflow versions a worker keeps in memory (least recently used evicted)
    plan_cache_size: int = 512
    #: ledger writes (enqueues, step writes) that may wait for a shared commit at once;
    #: further writers wait for room (backpressure)
    ledger_queue_limit: int = 1024
    #: Fair scheduling (docs/limits.md): the most runs of one tenant ``Running`` at once,
    #: over all workers (0: no cap), and per-tenant exceptions as ``tenant=cap,...``
    tenant_max_running: int = 0
    tenant_max_running_overrides: str = ""
    #: API rate limits (docs/limits.md): requests per second and burst of each tenant and
    #: of each principal (token) within a tenant; a rate of 0 switches that limit off
    rate_limit_tenant_per_second: float = 0.0
    rate_limit_tenant_burst: int = 0
    rate_limit_principal_per_second: float = 0.0
    rate_limit_principal_burst: int = 0
    #: seconds of a limit's rate one process takes from the shared bucket at once
    #: (PostgreSQL), so that a busy key costs one small write per reservation, not per
    #: request; 0: one write per request
    rate_limit_reserve_seconds: float = 0.1
    #: seconds a stopping worker lets in-flight runs finish before releasing them
    shutdown_grace: float = 30.0
    default_action_timeout: float = 300.0
    #: seconds an attempt runs before it gets a durable ``Running`` row and a
    #: ``StepStarted`` event (before that, and for shorter steps, its start is only a live
    #: event to in-process observers: no extra write); negative: never written
    step_started_after_seconds: float = 1.0
    #: seconds between keep-alive comments (``: ping``) on an idle live event stream
    #: (``GET /api/v1/events/stream``)
    sse_ping_seconds: float = 30.0
    #: bytes of ``ctx.log`` lines kept per attempt and per run (then a truncation line)
    step_log_max_bytes: int = 64 * 1024
    run_log_max_bytes: int = 1024 * 1024
    #: UTF-8 bytes of one attempt's outputs as JSON, and of all succeeded steps' outputs
    #: of a run; over either the step fails with ``output_too_large``; 0: no cap
    step_output_max_bytes: int = 4 * 1024 * 1024
    run_output_max_bytes: int = 64 * 1024 * 1024
    #: Retention (docs/semantics.md, "Retention"): days succeeded/cancelled runs and
    #: failed runs are kept after they end, and the most finished runs kept per workflow;
    #: 0 switches a rule off
    retention_days: float = 30.0
    retention_failed_days: float = 90.0
    retention_max_runs: int = 0
    #: seconds between two passes of ``serve``'s background pruner (0: no pruner) and
    #: the most runs one pass deletes per transaction
    prune_interval_seconds: float = 300.0
    prune_batch_size: int = 500
    #: UTF-8 bytes of one run variable's JSON value (``ctx.set_variable``)
    run_variable_max_bytes: int = 16 * 1024
    #: Conductor defaults (docs/semantics.md); a definition's own values win.
    default_max_parallel_actions: int = 10
    #: the deepest a subworkflow may nest below a run (its child has depth 1); a
    #: definition's ``maxNestingDepth`` wins (docs/semantics.md, "Subworkflows")
    default_max_nesting_depth: int = 5
    #: seconds a run may take from the moment a worker starts it; 0 means no limit
    default_workflow_timeout: float = 86400.0
    default_retry_max_attempts: int = 3
    default_retry_initial_delay: float = 1.0
    default_retry_backoff_multiplier: float = 2.0
    default_retry_max_delay: float = 60.0
    default_retry_jitter: bool = True
    #: the longest the scheduler sleeps (time-based triggers, docs/triggers.md). It sleeps
    #: until the next due fire time and is woken by trigger changes (in this process, and
    #: by NOTIFY on PostgreSQL); this bound only catches changes nothing announced (another
    #: process on SQLite) and jumps of the wall clock. Replaces ``scheduler_interval``.
    scheduler_max_sleep: float = 60.0
    #: seconds a scheduler holds a due trigger before another process may take it over
    scheduler_lease: float = 60.0
    #: SQLite's ``PRAGMA synchronous`` for the engine's connections. ``FULL`` (default):
    #: every commit is fsynced before it returns, so a run the ledger reported durable
    #: survives a power loss. ``NORMAL`` (with WAL) is faster but may lose the last
    #: commits on power loss or an OS crash (never on a process crash) -- figures in
    #: benchmarks/RESULTS.md. Ignored on PostgreSQL.
    sqlite_synchronous: str = "FULL"
    #: PostgreSQL: statements a connection runs often (5 times) become server-side
    #: prepared statements, planned once (a third less database CPU per run in W1,
    #: benchmarks/RESULTS.md). Behind PgBouncer in transaction mode this needs PgBouncer
    #: 1.21 or later with ``max_prepared_statements`` set; with an older pooler, false.
    #: None (auto): on, unless ``listen_database_url`` is set — the mark of a
    #: transaction pooler in front of ``database_url`` (docs/scaling.md).
    pg_prepared_statements: bool | None = None
    #: Work budget of one template or condition evaluation (docs/semantics.md, "Templates"):
    #: operations (loop iterations, calls, reads, operators, filter items), characters or
    #: items built, and seconds of wall clock; past any, ``template_budget_exceeded``.
    template_max_operations: int = 1_000_000
    template_max_size: int = 10_000_000
    template_timeout: float = 1.0
    #: processes that evaluate the templates too costly to run on the event loop
    template_workers: int = 2
    #: megabytes of address space a template worker process may grow by (0: no bound)
    template_memory_mb: int = 512
    #: compiled templates and conditions kept per process (least recently used go first)
    template_cache_size: int = 1024
    #: the largest document (UTF-8 bytes) a document template may render (preview and the
    #: ``core.template.render`` action, docs/templates.md); past it, ``document_too_large``.
    #: Documents also spend the template budget above (operations, size, time).
    document_max_bytes: int = 1_000_000
    #: JSON request bodies (API and webhooks): deepest nesting of arrays/objects, and the
    #: most characters one number may have; checked before the body is parsed (400)
    json_max_depth: int = 64
    json_max_number_length: int = 100
    log_level: str = "INFO"
    #: the engine's own log lines (serve, worker): ``json`` (one object per line, with the
    #: run's ids), ``console`` (for people) or ``auto`` (console when stderr is a terminal)
    log_format: str = "auto"
    #: the event loop of ``serve`` and ``worker``: ``auto`` (uvloop where it is installed,
    #: as it is by default on Linux and macOS), ``uvloop`` or ``asyncio``
    event_loop: str = "auto"
    #: Key(s) of the encrypted credential store: comma-separated url-safe base64 32-byte
    #: keys, the one to encrypt with first ("new,old" while rotating). Never printed.
    secret_key: str | None = field(default=None, repr=False)
    #: Where the key is kept when ``secret_key`` is not set. Default: beside a SQLite
    #: database file (``<database>.key``, generated on first start with mode 0600); none
    #: on PostgreSQL (every process sharing it needs the same explicit key). ``""``: off.
    secret_key_file: str | None = None
    #: Authentication (docs/auth.md): ``loose`` takes tenant and principal from the
    #: X-Tenant-Id / X-Principal headers, ``strict`` only from an API token or a JWT.
    #: None: loose on SQLite (with a warning at start-up), strict on PostgreSQL.
    auth_mode: str | None = None
    #: let ``serve`` listen on a non-loopback address in loose mode (it refuses otherwise)
    allow_loose_public: bool = False
    #: JWTs: an HS256 shared secret; or a PEM public key file (RS256/ES256); or a JWKS,
    #: a file path or an http(s) URL (keys picked by ``kid``). Audience and issuer are
    #: checked when set; ``exp`` is always required. Tenant and role come from the claims
    #: named below, the principal from ``sub``.
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_file: str | None = None
    jwt_jwks: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: seconds of clock skew allowed on exp / nbf / iat (at most 300)
    jwt_leeway_seconds: float = 30.0
    jwt_tenant_claim: str = "tenant"
    jwt_role_claim: str = "role"
    #: the bearer token ``/metrics`` takes in strict mode (process-wide figures of every
    #: tenant, so no tenant's token opens it); unset: ``/metrics`` answers 401 in strict mode
    scrape_token: str | None = field(default=None, repr=False)
    #: Plugin settings: every other ``DATAWORKFLOWS_<NAME>`` variable as ``{"<name>": value}``
    #: (``DATAWORKFLOWS_CREDENTIAL_*`` excluded); actions read them as ``ctx.settings``.
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(
                f"DATAWORKFLOWS_EVENT_LOOP={self.event_loop!r}: expected one of "
                + ", ".join(EVENT_LOOPS)
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"DATAWORKFLOWS_LOG_FORMAT={self.log_format!r}: expected one of "
                + ", ".join(LOG_FORMATS)
            )
        synchronous = self.sqlite_synchronous.strip().upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise SettingsError(
                f"DATAWORKFLOWS_SQLITE_SYNCHRONOUS={self.sqlite_synchronous!r}: expected one of "
                + ", ".join(SQLITE_SYNCHRONOUS)
            )
        object.__setattr__(self, "sqlite_synchronous", synchronous)
        parse_tenant_overrides(self.tenant_max_running_overrides)  # fail at start-up
        if self.read_database_url and (
            self.is_sqlite or not self.read_database_url.startswith("postgres")
        ):
            raise SettingsError(
                "DATAWORKFLOWS_READ_DATABASE_URL: a read replica is for a PostgreSQL database "
                "(postgresql://...), and DATAWORKFLOWS_DATABASE_URL must be PostgreSQL too"
            )
        for name in ("rate_limit_tenant_per_second", "rate_limit_principal_per_second"):
            if getattr(self, name) < 0:
                raise SettingsError(f"DATAWORKFLOWS_{name.upper()}: must not be negative")
        if self.auth_mode is not None and self.auth_mode.strip().lower() in ("", "auto"):
            object.__setattr__(self, "auth_mode", None)
        if self.auth_mode is not None and self.auth_mode not in AUTH_MODES:
            raise SettingsError(
                f"DATAWORKFLOWS_AUTH_MODE={self.auth_mode!r}: expected one of "
                + ", ".join(AUTH_MODES)
            )
        if not 0 <= self.jwt_leeway_seconds <= MAX_JWT_LEEWAY:
            raise SettingsError(
                f"DATAWORKFLOWS_JWT_LEEWAY_SECONDS={self.jwt_leeway_seconds!r}: expected "
                f"0 to {MAX_JWT_LEEWAY:g} seconds"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            key = "DATAWORKFLOWS_" + f.name.upper()
            if key in env:
                values[f.name] = _parse(key, env[key], f.type)
        for old, new in RENAMED.items():
            if old in env:
                log.warning("%s is no longer read: use %s (see the README)", old, new)
        values["extra"] = _plugin_settings(env, {f.name for f in fields(cls)} | _RENAMED_NAMES)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_auth_mode(self) -> str:
        """``auth_mode``, or its default: ``loose`` on SQLite, ``strict`` on PostgreSQL."""
        if self.auth_mode is not None:
            return self.auth_mode
        return "loose" if self.is_sqlite else "strict"

    @property
    def effective_pg_prepared_statements(self) -> bool:
        """``pg_prepared_statements``, or its default: off behind a pooler (a separate
        ``listen_database_url``), else on."""
        if self.pg_prepared_statements is not None:
            return self.pg_prepared_statements
        return not self.listen_database_url

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


#: ``tenant=number``: a tenant id (visible ASCII but ``=`` and ``,``) and a whole number
_TENANT_PAIR = re.compile(r"([\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,200})\s*=\s*(\d+)")


def parse_tenant_overrides(raw: str) -> dict[str, int]:
    """``DATAWORKFLOWS_TENANT_MAX_RUNNING_OVERRIDES``: ``tenant=cap,tenant=cap`` as a dict."""
    pairs: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        match = _TENANT_PAIR.fullmatch(item)
        if match is None:
            raise SettingsError(
                f"DATAWORKFLOWS_TENANT_MAX_RUNNING_OVERRIDES: {item!r} is not tenant=number "
                "(e.g. 'acme=4,globex=0')"
            )
        pairs[match.group(1)] = int(match.group(2))
    return pairs


_NOT_PLUGIN_SETTINGS = ("DATAWORKFLOWS_CREDENTIAL_", "DATAWORKFLOWS_TEST_")


def _plugin_settings(env: Mapping[str, str], known: set[str]) -> dict[str, str]:
    """``DATAWORKFLOWS_*`` variables that are not kernel settings nor credentials."""
    out = {}
    for key, value in env.items():
        if not key.startswith("DATAWORKFLOWS_") or key.startswith(_NOT_PLUGIN_SETTINGS):
            continue
        name = key[len("DATAWORKFLOWS_") :].lower()
        if name and name not in known:
            out[name] = value
    return out


def _parse(key: str, raw: str, type_: Any) -> Any:
    type_name = str(type_)
    try:
        if "bool" in type_name:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            if "None" in type_name and lowered in {"", "auto"}:
                return None
            raise ValueError("expected true or false")
        if type_name.startswith("int"):
            value = int(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if type_name.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r}: {exc}") from None
    return raw
