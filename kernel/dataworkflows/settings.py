"""Engine settings, read from ``DATAWORKFLOWS_*`` environment variables.

Every setting is listed in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./dataworkflows.db"


class SettingsError(ValueError):
    """A ``DATAWORKFLOWS_*`` variable has a value the engine cannot use."""


@dataclass(frozen=True)
class Settings:
    """All tunables of one engine process. Build with :meth:`from_env` or directly in tests."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    #: None: SQLite databases upgrade themselves on start, PostgreSQL ones must be
    #: upgraded with ``dataworkflows db upgrade``. True/False forces either way.
    auto_migrate: bool | None = None
    #: Comma-separated distribution names to load; None loads every installed plugin,
    #: an empty string loads none.
    load_plugins: str | None = None
    trace_plugins: bool = False
    worker_concurrency: int = 4
    poll_interval: float = 1.0
    default_action_timeout: float = 300.0
    log_level: str = "INFO"
    extra: Mapping[str, str] = field(default_factory=dict)

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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


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
