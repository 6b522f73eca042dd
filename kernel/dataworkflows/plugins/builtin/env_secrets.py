"""Credentials from environment variables: ``DATAWORKFLOWS_CREDENTIAL_<NAME>``.

``<NAME>`` is the credential name upper-cased with every non-alphanumeric character turned
into ``_`` (``chat-bot`` → ``DATAWORKFLOWS_CREDENTIAL_CHAT_BOT``). Environment credentials
belong to the whole engine process, so they are offered to every tenant; keep per-tenant
secrets in a tenant-aware provider.
"""

from __future__ import annotations

import os
import re

from dataworkflows.hookspecs import hookimpl

PREFIX = "DATAWORKFLOWS_CREDENTIAL_"


def variable_name(name: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@hookimpl(trylast=True)
def resolve_secret(name: str, tenant_id: str) -> str | None:
    return os.environ.get(variable_name(name))
