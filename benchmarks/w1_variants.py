"""Two variants of W1 for issue 22's honest figures, through the same measuring lifecycle
(:func:`benchmarks.workloads.run_engine_workload`):

* **W1io** — W1 whose two steps are real I/O: ``http.request`` calls to the local latency
  server (:mod:`benchmarks.latency_server`, its own process, answering after
  ``--io-latency-ms``); step 2 sends step 1's answer (``prev``). The server counts the
  requests of every measured run: exactly one per step, or the workload fails.
* **W1solo** — one run alone, serially: per run, open ``GET /api/v1/events/stream`` for
  the run's correlation id (before enqueueing), ``POST .../execute`` with that
  ``Correlation-Id``, and read the stream up to the run's final event. Client-observed
  202 → end and POST → end, beside the ledger's ``created_at`` → ``ended_at``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp

from benchmarks.common import BenchmarkError, latency_summary
from benchmarks.latency_server import IO_PATH, LatencyServer, check_runs, latency_server
from benchmarks.probe import LedgerProbe
from benchmarks.workloads import (
    Context,
    DriveResult,
    closed_loop,
    run_engine_workload,
    sqlite_mode,
    w1_definition,
)

#: the engine's SSRF guard refuses loopback unless allow-listed: W1io's engines only
IO_ENGINE_SETTINGS = {"http_allow_networks": "127.0.0.1/32"}
TERMINAL = ("RunSucceeded", "RunFailed", "RunCancelled")
#: how W1solo's client waits for a run's end (``--solo-client``)
SOLO_CLIENTS = {
    "stream": "one event stream per run (correlationId), opened before the POST",
    "ledger": "the harness polls the ledger every 1 ms (not through the engine)",
}
SOLO_POLL = 0.001
STREAM_PATH = "/api/v1/events/stream"


def w1io_definition(server_url: str, workflow_id: str = "bench-w1io") -> dict[str, Any]:
    """Two ``http.request`` steps calling the latency server; the second sends the token
    the first got back (``prev``), as W1's second echo renders the first's output."""

    def step(node: str, query: dict[str, str]) -> dict[str, Any]:
        return {
            "id": node,
            "actionType": "http.request",
            "parameters": {
                "method": "GET",
                "url": f"{server_url}{IO_PATH}",
                "query": {"run": "{{ trigger.i }}", **query},
                "timeoutSeconds": 10,
            },
        }

    return {
        "id": workflow_id,
        "displayName": "Benchmark W1io: two HTTP calls to a 5 ms server",
        "nodes": [
            step("first", {"step": "1"}),
            step("second", {"step": "2", "prev": "{{ nodes.first.outputs.json.token }}"}),
        ],
    }


def _variant(ctx: Context, backend: str) -> str:
    return f"{backend}-{sqlite_mode(ctx)}" if backend == "sqlite" else backend


async def run_w1io(ctx: Context, backend: str, n: int) -> dict[str, Any]:
    """W1io on ``backend``: against ``ctx.latency_server`` if the invocation started one,
    else a server of its own for this workload."""
    if ctx.latency_server is not None:
        return await _run_w1io(ctx, backend, n, ctx.latency_server)
    async with latency_server(ctx.io_latency_ms / 1e3) as server:
        return await _run_w1io(ctx, backend, n, server)


async def _run_w1io(ctx: Context, backend: str, n: int, server: LatencyServer) -> dict[str, Any]:
    definition = w1io_definition(server.url)
    tag = f"w1io-{_variant(ctx, backend)}-{uuid.uuid4().hex[:6]}"
    keys = [f"{tag}-{i}" for i in range(n)]

    async def drive(
        http: aiohttp.ClientSession, base: str, setup: dict[str, Any], probe: LedgerProbe
    ) -> DriveResult:
        driven = await closed_loop(
            http,
            base,
            definition["id"],
            n,
            probe,
            inflight=ctx.inflight,
            poll=ctx.poll,
            tag=tag,
            timeout=ctx.timeout,
            trigger_for=lambda i: {"i": keys[i]},
        )
        stats = await asyncio.to_thread(server.stats)
        driven.extra["io"] = {
            "server_url": server.url,
            "latency_ms": round(server.delay_s * 1e3, 3),
        } | check_runs(stats, keys)
        return driven

    result = await run_engine_workload(
        ctx,
        backend,
        name="W1io",
        definition=definition,
        n=n,
        drive=drive,
        settings=IO_ENGINE_SETTINGS,
    )
    io = result.get("io")
    if result.get("ok") and io is not None and not io["ok"]:
        result["ok"] = False
        result["error"] = (
            f"the latency server saw {io['requests_per_run']} requests per run; "
            f"{io['runs_not_exactly_one_per_step']} run(s) not exactly one per step "
            f"(first {io['first_wrong']}), {io['bad_prev']} step 2 without step 1's token"
        )
    return result


# -- W1solo -----------------------------------------------------------------------------


async def _final_event(stream: aiohttp.ClientResponse, timeout: float) -> dict[str, Any]:
    """Read the stream up to the first final run event; its data."""
    event: str | None = None
    async with asyncio.timeout(timeout):
        while True:
            line = await stream.content.readline()
            if not line:
                raise BenchmarkError("the event stream ended before the run did")
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
            elif line.startswith(b"data: ") and event in TERMINAL:
                data = dict(json.loads(line[6:]))
                data["type"] = event
                return data
            elif line == b"\n":
                event = None


async def _execute(
    http: aiohttp.ClientSession, base: str, workflow_id: str, key: str, i: int
) -> tuple[float, float, uuid.UUID]:
    """``POST .../execute`` (correlation id and request id ``key``): the client's clock
    before the request and when the 202's headers arrived, and the run's id."""
    url = f"{base}/api/v1/workflows/{workflow_id}/execute"
    body = {"trigger": {"i": i}, "requestId": key}
    t_post = time.perf_counter()
    async with http.post(url, json=body, headers={"Correlation-Id": key}) as resp:
        t_202 = time.perf_counter()
        answer = await resp.json(content_type=None)
        if resp.status != 202:
            raise BenchmarkError(f"execute answered {resp.status}: {answer}")
    return t_post, t_202, uuid.UUID(answer["executionId"])


def _record(execution_id: uuid.UUID, status: str, t_post: float, t_202: float) -> dict[str, Any]:
    t_end = time.perf_counter()
    return {
        "id": execution_id,
        "status": status,
        "post_to_202": t_202 - t_post,
        "ack_to_end": t_end - t_202,
        "post_to_end": t_end - t_post,
        "end_wall": time.time(),
    }


async def solo_run(
    http: aiohttp.ClientSession, base: str, workflow_id: str, key: str, i: int, timeout: float
) -> dict[str, Any]:
    """One run alone: stream opened first, then POST; client-side timestamps."""
    params = {"correlationId": key}
    async with http.get(f"{base}{STREAM_PATH}", params=params) as stream:
        if stream.status != 200:
            raise BenchmarkError(f"the event stream answered {stream.status}")
        opened = await asyncio.wait_for(stream.content.readline(), timeout)
        if not opened.startswith(b":"):
            raise BenchmarkError(f"the event stream began with {opened[:100]!r}")
        t_post, t_202, execution_id = await _execute(http, base, workflow_id, key, i)
        final = await _final_event(stream, timeout)
        record = _record(execution_id, final["type"], t_post, t_202)
    if final.get("executionId") != str(execution_id):
        raise BenchmarkError(f"the stream's final event is of another run: {final}")
    return record


async def solo_run_ledger(
    http: aiohttp.ClientSession,
    base: str,
    workflow_id: str,
    key: str,
    i: int,
    timeout: float,
    *,
    probe: LedgerProbe,
    poll: float,
) -> dict[str, Any]:
    """One run alone, its end seen by polling the ledger every ``poll`` seconds (the
    harness's own read-only connection; the engine serves nothing for it)."""
    t_post, t_202, execution_id = await _execute(http, base, workflow_id, key, i)
    async with asyncio.timeout(timeout):
        while True:
            if await probe.finished([execution_id]):
                break
            await asyncio.sleep(poll)
    return _record(execution_id, "final in the ledger", t_post, t_202)


async def run_w1solo(ctx: Context, backend: str, n: int) -> dict[str, Any]:
    """W1solo on ``backend``: ``n`` runs of W1's workflow, one at a time."""
    definition = w1_definition("bench-w1solo")
    tag = f"w1solo-{_variant(ctx, backend)}-{uuid.uuid4().hex[:6]}"

    async def drive(
        http: aiohttp.ClientSession, base: str, setup: dict[str, Any], probe: LedgerProbe
    ) -> DriveResult:
        records: list[dict[str, Any]] = []
        errors: list[str] = []
        started = time.perf_counter()
        deadline = started + ctx.timeout
        for i in range(n):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise BenchmarkError(f"timed out after {ctx.timeout:.0f} s: {i} of {n} runs")
            args = (http, base, definition["id"], f"{tag}-{i}", i, min(30.0, remaining))
            try:
                if ctx.solo_client == "ledger":
                    records.append(await solo_run_ledger(*args, probe=probe, poll=SOLO_POLL))
                else:
                    records.append(await solo_run(*args))
            except (aiohttp.ClientError, TimeoutError, BenchmarkError, KeyError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                if len(errors) > max(3, n // 10):
                    raise BenchmarkError(f"too many failed runs; first: {errors[0]}") from None
        wall = time.perf_counter() - started
        ledger = {t.id: t for t in await probe.timings([r["id"] for r in records])}
        lag = [
            r["end_wall"] - t.ended_at.timestamp()
            for r in records
            if (t := ledger.get(r["id"])) is not None and t.ended_at is not None
        ]
        for r in records:
            if ctx.solo_client == "ledger" and r["id"] in ledger:
                r["status"] = f"Run{ledger[r['id']].status}"
        solo = {
            "client": SOLO_CLIENTS[ctx.solo_client],
            "ack_to_end": latency_summary([r["ack_to_end"] for r in records]),
            "post_to_end": latency_summary([r["post_to_end"] for r in records]),
            "post_to_202": latency_summary([r["post_to_202"] for r in records]),
            # the stream's delivery: the ledger's ended_at -> the client has the final event
            "ledger_end_to_client": latency_summary(lag),
            "final_statuses": sorted({r["status"] for r in records}),
        }
        return DriveResult([r["id"] for r in records], errors, wall, {"solo": solo})

    return await run_engine_workload(
        ctx, backend, name="W1solo", definition=definition, n=n, drive=drive
    )
