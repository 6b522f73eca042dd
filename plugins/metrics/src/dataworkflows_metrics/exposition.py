"""``GET /metrics``: this process's metrics (or, in multi-process mode, the sum over every
process of the host) plus the queue gauges, read from the database at scrape time.

Query: ``name[]`` (repeatable) keeps only the named series, as ``prometheus_client``'s own
exporters do; any other parameter is a 400. ``Accept: application/openmetrics-text`` gets
the OpenMetrics format.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dataworkflows_metrics.recorder import PREFIX, recorder
from dataworkflows_metrics.setup import MetricsSettingError, config, remove_dead_processes

if TYPE_CHECKING:
    from aiohttp import web

    from dataworkflows.measurements import QueueDepth, TableSize
    from dataworkflows.plugin_api import PluginAPI

log = logging.getLogger(__name__)

ROUTE = "/metrics"
_NAME_PARAMETER = "name[]"
_MAX_NAMES = 100


def _error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    from aiohttp import web

    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status)


class _QueueCollector:
    """The queue gauges of one scrape (read before rendering: collectors are synchronous)."""

    def __init__(self, depth: QueueDepth | None) -> None:
        self._depth = depth

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        depth = self._depth
        if depth is None:
            return
        family = GaugeMetricFamily(
            PREFIX + "queue_depth", "Runs in the queue now, by state.", labels=["state"]
        )
        family.add_metric(["pending"], depth.pending)
        family.add_metric(["running"], depth.running)
        yield family
        yield GaugeMetricFamily(
            PREFIX + "queue_oldest_pending_seconds",
            "Seconds the oldest pending run has waited (0 when none waits).",
            value=depth.oldest_pending_seconds or 0.0,
        )


class _LedgerCollector:
    """The ledger's size per table, read before rendering (issue #20: ledger growth)."""

    def __init__(self, sizes: list[TableSize] | None) -> None:
        self._sizes = sizes or []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if not self._sizes:
            return
        rows = GaugeMetricFamily(
            PREFIX + "ledger_rows",
            "Rows per ledger table (PostgreSQL: the planner's estimate; SQLite: exact).",
            labels=["table"],
        )
        size = GaugeMetricFamily(
            PREFIX + "ledger_bytes",
            "Bytes on disk per ledger table, indexes included.",
            labels=["table"],
        )
        for table in self._sizes:
            if table.rows is not None:
                rows.add_metric([table.table], table.rows)
            if table.bytes is not None:
                size.add_metric([table.table], table.bytes)
        yield rows
        yield size


def _registry(
    depth: QueueDepth | None, *, filtered: bool, sizes: list[TableSize] | None = None
) -> Any:
    from prometheus_client import CollectorRegistry

    directory = config().directory
    # a filtered scrape (name[]) needs the collectors' names, found by collecting once more
    scrape = CollectorRegistry(auto_describe=filtered)
    if directory is None:
        scrape.register(_Forward(recorder().registry))
    else:
        from prometheus_client import multiprocess

        recorder()  # this process's own files exist even before its first event
        remove_dead_processes(directory)
        multiprocess.MultiProcessCollector(scrape, path=directory)
    scrape.register(_QueueCollector(depth))
    scrape.register(_LedgerCollector(sizes))
    return scrape


class _Forward:
    """Collects another registry's metrics (the process's own, single-process mode)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        return self._registry.collect()


def make_handler(api: PluginAPI) -> Any:
    """The ``GET /metrics`` handler bound to the kernel's plugin API."""
    from aiohttp import web
    from prometheus_client.exposition import choose_encoder

    async def handle(request: web.Request) -> web.Response:
        try:
            enabled = config().enabled
        except MetricsSettingError as exc:
            return _error(503, "metrics_misconfigured", str(exc))
        if not enabled:
            return _error(404, "metrics_disabled", "metrics are off (DATAWORKFLOWS_METRICS)")
        unknown = sorted({key for key in request.query if key != _NAME_PARAMETER})
        if unknown:
            return _error(
                400,
                "unknown_parameter",
                f"/metrics takes only {_NAME_PARAMETER}; unknown: {', '.join(unknown)}",
                {"parameters": unknown, "allowed": [_NAME_PARAMETER]},
            )
        names = request.query.getall(_NAME_PARAMETER, [])
        bad = [n for n in names if not n or len(n) > 200 or not n.isascii()]
        if bad or len(names) > _MAX_NAMES:
            return _error(
                400,
                "invalid_parameter",
                f"{_NAME_PARAMETER}: at most {_MAX_NAMES} metric names of 1-200 ASCII characters",
                {"parameter": _NAME_PARAMETER},
            )
        try:
            depth = await api.queue_depth()
        except Exception as exc:  # the database is away: the process's own metrics still count
            log.warning("metrics: the queue depth could not be read: %s", exc)
            depth = None
        try:
            sizes = await api.ledger_size()
        except Exception as exc:
            log.warning("metrics: the ledger's size could not be read: %s", exc)
            sizes = None
        registry = _registry(depth, filtered=bool(names), sizes=sizes)
        if names:
            registry = registry.restricted_registry(names)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # reading the host's files and formatting them is blocking work: off the event loop
        body = await asyncio.to_thread(encoder, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle
