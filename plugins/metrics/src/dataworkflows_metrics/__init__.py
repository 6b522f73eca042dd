"""``metrics``: Prometheus metrics of the engine at ``GET /metrics``.

Entry point only: ``prometheus_client`` is imported on the first event (and the settings
read then, see :mod:`dataworkflows_metrics.setup`), not with the plugin, so that listing
plugins stays fast. Runs are observed through ``on_run_event``, the kernel's machinery
through ``on_engine_measurement``; the route is mounted by ``register_routes``.
"""

from __future__ import annotations

import logging
from typing import Any

from dataworkflows import hookimpl

#: the plugin-API versions this plugin works with: 1.1 added on_engine_measurement,
#: RunEvent.action_type / duration_seconds and PluginAPI.queue_depth
dataworkflows_api = ">=1.1,<2"
#: what it registers (type: title), so `dataworkflows plugins` need not import it
dataworkflows_actions = {}
dataworkflows_triggers = {}


class _Sink:
    """The process's recorder once made (None while metrics are off)."""

    ready = False
    recorder: Any = None


def _recorder() -> Any:
    if not _Sink.ready:
        from dataworkflows_metrics.recorder import recorder
        from dataworkflows_metrics.setup import MetricsSettingError, config

        try:
            _Sink.recorder = recorder() if config().enabled else None
        except MetricsSettingError as exc:  # said once; the runs go on without metrics
            logging.getLogger(__name__).error("metrics are off: %s", exc)
        _Sink.ready = True
    return _Sink.recorder


@hookimpl
def on_run_event(event: Any) -> None:
    sink = _recorder()
    if sink is not None:
        sink.on_run_event(event)


@hookimpl
def on_engine_measurement(measurement: Any) -> None:
    sink = _recorder()
    if sink is not None:
        sink.on_measurement(measurement)


@hookimpl
def register_routes(app: Any, kernel: Any) -> None:
    from dataworkflows import requires
    from dataworkflows_metrics.exposition import ROUTE, make_handler

    # figures of every tenant: the operator's scrape token in strict mode (docs/auth.md)
    app.router.add_get(ROUTE, requires("scrape")(make_handler(kernel)))
