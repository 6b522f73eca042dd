"""A local OTLP/HTTP trace receiver that accepts and counts spans, for measuring the cost
of tracing (benchmarks/RESULTS.md, "Issue 16 — traces")::

    python3 -m uv run --all-packages python -m benchmarks.otlp_sink --port 4318 &
    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
        python3 -m uv run --all-packages python -m benchmarks run --only W1 ...

It answers ``POST /v1/traces`` with 200 and an empty ``ExportTraceServiceResponse``, as
a collector does, decodes each request (so the figure printed at the end, when it is
stopped with SIGINT/SIGTERM, or ``GET /stats`` at any time, is the number of spans the
engine really exported) and listens on 127.0.0.1 only. The engine's ``dataworkflows
serve`` inherits the ``OTEL_*`` variables of the harness (benchmarks/engine.py passes every
variable but ``DATAWORKFLOWS_*``).
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from benchmarks.common import until_signalled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


async def serve(port: int) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    counts = {"requests": 0, "spans": 0}
    empty = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        counts["requests"] += 1
        counts["spans"] += sum(
            len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans
        )
        return web.Response(body=empty, content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"otlp sink on http://127.0.0.1:{port}/v1/traces", flush=True)
    await until_signalled()
    await runner.cleanup()
    print(f"otlp sink: {counts['requests']} requests, {counts['spans']} spans", flush=True)


if __name__ == "__main__":
    main()
