"""Drive an already running ``dataworkflows serve``: N runs of a 2-step echo workflow over
HTTP, at most ``--inflight`` unfinished at once, and wait until every one has ended.

``python -m benchmarks.http_drive --url http://127.0.0.1:8080 --n 500``

Prints runs/s (first POST to last end seen) and the statuses. Used in docs/scaling.md to
show the engine behind PgBouncer in transaction mode; any server works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp

FINAL = {"Succeeded", "Failed", "Cancelled"}


def workflow(workflow_id: str) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "http drive",
        "nodes": [
            {"id": "one", "actionType": "core.echo", "parameters": {"message": "{{ trigger.i }}"}},
            {
                "id": "two",
                "actionType": "core.echo",
                "parameters": {"message": "{{ nodes.one.outputs.echo }}"},
            },
        ],
    }


async def drive(url: str, n: int, inflight: int, timeout: float) -> dict[str, Any]:
    workflow_id = f"drive-{uuid.uuid4().hex[:8]}"
    statuses: Counter[str] = Counter()
    gate = asyncio.Semaphore(inflight)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(url) as http:
        async with http.post(
            "/api/v1/workflows?autoActivate=true", json=workflow(workflow_id)
        ) as r:
            assert r.status == 201, await r.text()

        async def one(i: int) -> None:
            async with gate:
                path = f"/api/v1/workflows/{workflow_id}/execute"
                async with http.post(path, json={"trigger": {"i": i}}) as r:
                    assert r.status == 202, await r.text()
                    status_url = (await r.json())["statusUrl"]
                while time.monotonic() < deadline:
                    async with http.get(status_url) as r:
                        status = (await r.json())["status"]
                    if status in FINAL:
                        statuses[status] += 1
                        return
                    await asyncio.sleep(0.01)
                statuses["timedOut"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    return {
        "runs": n,
        "statuses": dict(statuses),
        "seconds": round(elapsed, 2),
        "runs_per_s": round(n / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(drive(args.url, args.n, args.inflight, args.timeout))))


if __name__ == "__main__":
    main()
