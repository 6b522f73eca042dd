"""The ``propagation_headers`` hook as an action sees it (``ctx.propagation_headers()``).

The conductor gives each attempt's :class:`~dataworkflows.actions.ActionContext` a source
made here. When no plugin implements the hook (tracing not installed) there is none, and
``ctx.propagation_headers()`` costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from dataworkflows.plugins.manager import PluginSet

log = logging.getLogger(__name__)


def propagation_source(
    plugins: PluginSet, execution_id: str, node_id: str, attempt: int
) -> Callable[[], Mapping[str, str]] | None:
    """A callable returning the merged headers of every ``propagation_headers``
    implementation for this attempt (the first to name a header wins), or None when no
    plugin implements the hook. A failing implementation is logged and gives nothing."""
    hook = plugins.hook.propagation_headers
    if not hook.get_hookimpls():
        return None

    def headers() -> dict[str, str]:
        try:
            answers = hook(execution_id=execution_id, node_id=node_id, attempt=attempt)
        except Exception:
            log.exception("a propagation_headers hook failed (run %s)", execution_id)
            return {}
        merged: dict[str, str] = {}
        for answer in reversed(answers):  # pluggy answers last-registered first
            for name, value in (answer or {}).items():
                merged.setdefault(str(name), str(value))
        return merged

    return headers
