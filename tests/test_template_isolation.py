"""Issue #24, end to end: a hostile template, edge condition or activation condition fails
with ``template_budget_exceeded`` within the configured limit while ``/health`` keeps
answering and 50 runs started at the same moment all succeed; on every backend.

Each hostile evaluation here burns CPU until the wall-clock limit stops it (the operation
budget is set high so that the clock, the harder case, is what ends it). ``/health`` is
polled every ~20 ms throughout. With the hostile evaluation alone, every answer must come
within the issue's 100 ms — or, if the shared 2-core machine kept this process off the
CPU for longer (seen here under other engineers' test runs: 116-324 ms answers while this
process used a few ms of CPU), this process must have spent less than 100 ms of CPU
meanwhile: an answer held up by an evaluation on the event loop costs the process its
whole duration in CPU. With 50 runs started at the same moment the same holds with
TIMEOUT as the bound (their own work is CPU of this process too), and the median answer
stays within 100 ms.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

TIMEOUT = 2.0  # DATAWORKFLOWS_TEMPLATE_TIMEOUT in these tests
#: the issue's 100 ms; asserted on the slowest /health answer while everything runs
HEALTH_BOUND = 0.1
#: how long past the limit a budget failure may be recorded (process start, IPC, load)
MARGIN = 4.0
OTHERS = 50

NESTED = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}x"
#: the same work, with sizes that only the run's data knows (publishing cannot refuse it)
DATA_NESTED = (
    "{% for i in range(trigger.n) %}{% for j in range(trigger.n) %}{% endfor %}{% endfor %}x"
)
COSTLY_CONDITION = "range(trigger.n)" + "|map('string')" * 60 + "|list|length > 0"
#: a webhook's payload is under trigger.body
COSTLY_ACTIVATION = COSTLY_CONDITION.replace("trigger.n", "trigger.body.n")

GOOD = {
    "id": "good",
    "displayName": "good",
    "nodes": [
        {"id": "say", "actionType": "core.echo", "parameters": {"message": "{{ trigger.i }}"}}
    ],
}
BAD_TEMPLATE = {
    "id": "bad-template",
    "displayName": "bad template",
    "nodes": [{"id": "stall", "actionType": "core.echo", "parameters": {"message": DATA_NESTED}}],
}
BAD_EDGE = {
    "id": "bad-edge",
    "displayName": "bad edge condition",
    "startNode": "first",
    "nodes": [
        {
            "id": "first",
            "actionType": "core.echo",
            "parameters": {"message": "hi"},
            "edges": [{"targetNode": "second", "when": "success", "condition": COSTLY_CONDITION}],
        },
        {"id": "second", "actionType": "core.echo", "parameters": {"message": "never"}},
    ],
}


@pytest.fixture
async def setup(kernel_factory: Any, api_factory: Any) -> Any:
    pytest.importorskip("dataworkflows_echo")
    kernel = await kernel_factory(
        template_timeout=TIMEOUT,
        template_max_operations=10**12,
        template_workers=2,
        worker_concurrency=OTHERS + 4,
    )
    await kernel.templates.pool.start()  # as `serve` does before its first request
    api = await api_factory(kernel)
    for definition in (GOOD, BAD_TEMPLATE, BAD_EDGE):
        resp = await api.post("/api/v1/workflows?autoActivate=true", json=definition)
        assert resp.status == 201, await resp.text()
    # What the earlier tests of a whole-suite session left on the heap must not be
    # collected inside the measured window: once (CI, whole suite) /health was held
    # 1.27 s with this process busy 1.25 s (39 answers instead of ~83), and alone the
    # test never comes near (slowest 13-33 ms); a full collection of a session's leftovers
    # is the likely cause, and it is the test session's work, not the engine's. Collect
    # now, and keep those objects out of collections while the probe runs.
    gc.collect()
    gc.freeze()
    try:
        yield kernel, api
    finally:
        gc.unfreeze()


class HealthProbe:
    """Polls ``/health`` until stopped; keeps the wall-clock latency of every answer and
    the CPU time this process spent meanwhile (all threads)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.samples: list[tuple[float, float]] = []  # (wall, process CPU) seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HealthProbe:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _poll(self) -> None:
        while not self._stop.is_set():
            wall, cpu = time.perf_counter(), time.process_time()
            resp = await self.api.get("/health")
            assert resp.status == 200
            await resp.read()
            self.samples.append((time.perf_counter() - wall, time.process_time() - cpu))
            # pacing, not synchronisation: a probe every ~20 ms
            with_timeout = asyncio.wait_for(self._stop.wait(), 0.02)
            try:
                await with_timeout
            except TimeoutError:
                pass

    def check(self, bound: float, median: float | None = None) -> None:
        """Every answer within ``bound``, unless this process was not the one busy: an
        answer held up by work on the event loop costs this process that much CPU, one
        that waited for a CPU the machine's other tenants held (2 shared cores) or for
        the database does not. ``median``: bound on the median wall-clock latency."""
        walls = sorted(w for w, _ in self.samples)
        assert len(walls) >= 10, walls
        middle = walls[len(walls) // 2]
        slow = [(w, c) for w, c in self.samples if w >= bound]
        report = (
            f"/health: {len(walls)} answers, median {middle * 1000:.1f} ms, slowest "
            f"{walls[-1] * 1000:.1f} ms; over {bound * 1000:.0f} ms: "
            + (", ".join(f"{w * 1000:.0f} ms (CPU {c * 1000:.0f} ms)" for w, c in slow) or "none")
        )
        print(report)  # shown with -s: the figures behind the assertion
        assert all(cpu < bound for _, cpu in slow), report
        if median is not None:
            assert middle < median, report


async def start(api: Any, workflow: str, trigger: dict[str, Any]) -> str:
    resp = await api.post(f"/api/v1/workflows/{workflow}/execute", json={"trigger": trigger})
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["executionId"])


async def final(kernel: Any, run_id: str) -> dict[str, Any]:
    await kernel.ledger.wait_until_final(uuid.UUID(run_id), 120)
    return dict(await kernel.service.get_execution(run_id))


async def others_succeed(kernel: Any, run_ids: list[str]) -> None:
    runs = await asyncio.gather(*(final(kernel, r) for r in run_ids))
    assert [r["status"] for r in runs] == ["Succeeded"] * OTHERS
    assert sorted(r["actions"][0]["outputs"]["echo"] for r in runs) == sorted(range(OTHERS))


def seconds(row: dict[str, Any]) -> float:
    started = row["startedAt"]
    ended = row["endedAt"]
    if isinstance(started, str):
        started, ended = datetime.fromisoformat(started), datetime.fromisoformat(ended)
    return float((ended - started).total_seconds())


async def bad_template(kernel: Any, api: Any) -> None:
    bad = await final(kernel, await start(api, "bad-template", {"n": 99999}))
    assert bad["status"] == "Failed"
    assert bad["error"]["code"] == "template_budget_exceeded"
    assert bad["error"]["nodeId"] == "stall"
    [attempt] = bad["actions"]  # permanent: not retried
    assert attempt["error"]["code"] == "template_budget_exceeded"
    assert attempt["error"]["details"]["path"] == "$.nodes[0].parameters.message"
    assert "'stall'" in attempt["error"]["message"]
    assert f"took longer than {TIMEOUT:g} s" in attempt["error"]["message"]
    assert seconds(attempt) < TIMEOUT + MARGIN


async def bad_edge(kernel: Any, api: Any) -> None:
    bad = await final(kernel, await start(api, "bad-edge", {"n": 99999}))
    assert bad["status"] == "Failed"
    assert bad["error"]["code"] == "template_budget_exceeded"
    assert bad["error"]["nodeId"] == "first"
    assert bad["error"]["details"]["path"] == "$.nodes[0].edges[0].condition"
    assert f"took longer than {TIMEOUT:g} s" in bad["error"]["message"]
    [first] = bad["actions"]  # the second node never ran
    assert first["status"] == "Failed"
    assert first["outputs"] == {"echo": "hi"}  # the action itself succeeded
    assert seconds(first) < TIMEOUT + MARGIN


async def bad_activation(kernel: Any, api: Any) -> None:
    pytest.importorskip("dataworkflows_webhook")
    resp = await api.post(
        "/api/v1/workflows/good/triggers",
        json={"type": "webhook", "config": {}, "activationCondition": COSTLY_ACTIVATION},
    )
    assert resp.status == 201, await resp.text()
    trigger_id = (await resp.json())["id"]
    started = time.perf_counter()
    resp = await api.post(f"/hooks/{trigger_id}", json={"n": 99999})
    elapsed = time.perf_counter() - started
    assert resp.status == 200
    answer = await resp.json()
    assert answer["activated"] is False
    assert answer == {"activated": False, "reason": "conditionError"}  # no details: the owner's
    assert elapsed < TIMEOUT + MARGIN
    view = await (await api.get(f"/api/v1/workflows/good/triggers/{trigger_id}")).json()
    assert view["stats"]["conditionErrors"] == 1
    assert view["lastError"]["code"] == "template_budget_exceeded"
    assert view["lastError"]["details"] == {
        "path": "$.activationCondition",
        "triggerId": trigger_id,
    }


SCENARIOS = {"template": bad_template, "edge condition": bad_edge, "activation": bad_activation}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_alone_health_answers_within_100_ms(setup: Any, scenario: Any) -> None:
    """The hostile evaluation with nothing else going on: every /health answer is within
    the issue's 100 ms while the evaluation burns a core for TIMEOUT seconds."""
    kernel, api = setup
    async with HealthProbe(api) as health:
        await scenario(kernel, api)
    health.check(HEALTH_BOUND)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_fifty_runs_started_at_the_same_time_succeed(setup: Any, scenario: Any) -> None:
    """The hostile evaluation and 50 runs started together: all 50 succeed; /health
    keeps answering. Its slowest answer here also waits on 50 runs' database work on a
    shared machine (measured: up to ~0.6 s with no template involved), so the bound is
    TIMEOUT: an evaluation on the event loop would have held an answer for at least
    that; the median stays within 100 ms."""
    kernel, api = setup
    async with HealthProbe(api) as health:
        others = [start(api, "good", {"i": i}) for i in range(OTHERS)]
        _, *ids = await asyncio.gather(scenario(kernel, api), *others)
        await others_succeed(kernel, ids)
    health.check(TIMEOUT, median=HEALTH_BOUND)


async def test_publishing_refuses_loops_that_must_exceed_the_budget(
    kernel_factory: Any, api_factory: Any
) -> None:
    api = await api_factory(await kernel_factory())  # the default budget
    definition = {**BAD_TEMPLATE, "id": "static-bad"}
    definition["nodes"] = [{**BAD_TEMPLATE["nodes"][0], "parameters": {"message": NESTED}}]
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=definition)
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "invalid_definition"
    [problem] = body["details"]["problems"]
    assert problem["code"] == "template_unbounded"
    assert problem["path"] == "$.nodes[0].parameters.message"
    assert "9,999,800,001" in problem["message"]
    assert (await api.get("/api/v1/workflows/static-bad")).status == 404


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "depth"),
        (b'{"trigger": {"n": ' + b"1" * 5000 + b"}}", "numberLength"),
    ],
)
async def test_json_bodies_are_bounded_before_parsing(setup: Any, body: bytes, limit: str) -> None:
    _, api = setup
    resp = await api.post(
        "/api/v1/workflows/good/execute", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    answer = await resp.json()
    assert answer["code"] == "json_limit_exceeded"
    assert answer["details"]["limit"] == limit
