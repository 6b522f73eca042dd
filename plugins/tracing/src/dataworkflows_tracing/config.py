"""Tracing as the standard ``OTEL_*`` environment variables configure it.

On when ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or, without it,
when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (then
the exporter is ``otlp``). Off when none of them is set, or ``OTEL_SDK_DISABLED=true``.
Unlike the SDK's own auto-configuration, whose default exporter is ``otlp``, an engine
with no ``OTEL_*`` variable exports nothing and does no tracing work at all.

Exporters are found like the SDK's auto-configuration finds them, by name in the
``opentelemetry_traces_exporter`` entry-point group: ``otlp`` (HTTP/protobuf, installed
with this plugin, with the encoder of :mod:`dataworkflows_tracing.otlp`;
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL=grpc`` needs
``opentelemetry-exporter-otlp-proto-grpc``), ``console``, or any installed one. Each gets
a ``BatchSpanProcessor`` (``OTEL_BSP_*``). The exporters read their own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``); the resource comes
from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``dataworkflows``
when neither names one) and the sampler from ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based, always on).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "dataworkflows"
EXPORTER_GROUP = "opentelemetry_traces_exporter"


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters asked for (``[]``: tracing off)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is not None:
        return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ["otlp"]
    return []


def enabled(env: Mapping[str, str]) -> bool:
    """Whether the variables turn tracing on (cheap: imports nothing)."""
    return bool(exporter_names(env))


def provider_from_env(env: Mapping[str, str]) -> TracerProvider | None:
    """A tracer provider exporting to every exporter asked for that is installed, or None
    (with a warning) when none of them is."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [e for e in (_exporter(name, env) for name in exporter_names(env)) if e]
    if not exporters:
        log.warning("tracing is off: no exporter of OTEL_TRACES_EXPORTER could be loaded")
        return None
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    entry = name
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol == "http/protobuf":
            # the SDK's exporter with an encoder several times cheaper (dataworkflows_tracing.otlp)
            from dataworkflows_tracing.otlp import LeanOTLPSpanExporter

            return LeanOTLPSpanExporter()
        entry = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    found = entry_points(group=EXPORTER_GROUP, name=entry)
    if not found:
        log.warning(
            "tracing: OTEL_TRACES_EXPORTER asks for %r, but no such exporter is installed "
            "(entry point %r of group %s)",
            name,
            entry,
            EXPORTER_GROUP,
        )
        return None
    try:
        return next(iter(found)).load()()
    except Exception:
        log.exception("tracing: the %r exporter could not be created", name)
        return None
