"""``GET /metrics`` (dataworkflows-metrics) on both backends: what a run's events and the
kernel's measurements (``on_engine_measurement``) produce, with their labels, read back by
parsing the exposition text; a failing run beside a healthy one; bad query parameters.

Metrics are process-wide, so every test uses workflow ids of its own and compares what
has no workflow label before and after.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

import dataworkflows_echo
import dataworkflows_metrics
import dataworkflows_webhook
from dataworkflows import hookimpl
from dataworkflows.db.models import workflow_executions
from dataworkflows.ledger.run_ledger import StaleRunError, StepRecord
from dataworkflows_metrics import exposition
from dataworkflows_metrics.setup import (
    MetricsConfig,
    MetricsSettingError,
    check_directory,
    read_config,
)


class Spy:
    """Sees the kernel's engine measurements."""

    def __init__(self) -> None:
        self.measurements: list[Any] = []

    @hookimpl
    def on_engine_measurement(self, measurement: Any) -> None:
        self.measurements.append(measurement)

    def names(self) -> set[str]:
        return {str(m.name) for m in self.measurements}


def _flow(workflow_id: str, **echo: Any) -> dict[str, Any]:
    params = {"message": "hi", **echo}
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [
            {
                "id": "one",
                "actionType": "core.echo",
                "parameters": params,
                "retry": {"maxAttempts": 2, "initialDelay": 0.01, "jitter": False},
            },
            {"id": "two", "actionType": "core.echo", "parameters": {"message": "bye"}},
        ],
    }


async def scrape(
    client: Any, **params: Any
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    response = await client.get("/metrics", params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _kernel(kernel_factory: Any, *extra: Any) -> Any:
    return await kernel_factory(
        plugins=[dataworkflows_echo, dataworkflows_metrics, dataworkflows_webhook, *extra],
        entrypoints=False,
    )


async def test_runs_steps_claims_and_batches_are_counted_with_their_labels(
    kernel_factory, api_factory
):
    spy = Spy()
    kernel = await _kernel(kernel_factory, spy)
    suffix = uuid.uuid4().hex[:8]
    healthy, poisoned = f"m-ok-{suffix}", f"m-bad-{suffix}"
    await kernel.service.apply(_flow(healthy))
    await kernel.service.apply(_flow(poisoned, failAlways=True))
    client = await api_factory(kernel, run_worker=False)
    before = await scrape(client)
    # queued while no worker runs: the worker claims them from the queue afterwards
    ids = []
    for workflow_id in (healthy, healthy, poisoned):
        summary, _ = await kernel.service.execute(workflow_id, trigger={})
        ids.append(uuid.UUID(summary["executionId"]))
    queued = await scrape(client)
    assert value(queued, "dataworkflows_queue_depth", state="pending") >= 3
    assert value(queued, "dataworkflows_queue_oldest_pending_seconds") >= 0
    kernel.start_worker()
    statuses = [await kernel.ledger.wait_until_final(i, 30) for i in ids]
    assert statuses == ["Succeeded", "Succeeded", "Failed"]

    after = await scrape(client)
    assert value(after, "dataworkflows_runs_queued_total", workflow_id=healthy) == 2
    assert value(after, "dataworkflows_runs_started_total", workflow_id=healthy) == 2
    assert value(after, "dataworkflows_runs_started_total", workflow_id=poisoned) == 1
    finished = "dataworkflows_runs_finished_total"
    assert value(after, finished, workflow_id=healthy, status="Succeeded") == 2
    assert value(after, finished, workflow_id=healthy, status="Failed") == 0
    assert value(after, finished, workflow_id=poisoned, status="Failed") == 1

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    echo = {"action_type": "core.echo"}
    # healthy: 2 runs x 2 steps; poisoned: step one fails twice (a retry), step two never runs
    assert delta("dataworkflows_steps_started_total", **echo) == 6
    assert delta("dataworkflows_step_duration_seconds_count", status="Succeeded", **echo) == 4
    assert delta("dataworkflows_step_duration_seconds_count", status="Failed", **echo) == 1
    assert (
        delta("dataworkflows_step_duration_seconds_count", status="RetriableFailure", **echo) == 1
    )
    assert delta("dataworkflows_step_retries_total", **echo) == 1
    bucket = value(
        after, "dataworkflows_step_duration_seconds_bucket", le="+Inf", status="Succeeded", **echo
    )
    assert bucket == value(
        after, "dataworkflows_step_duration_seconds_count", status="Succeeded", **echo
    )
    assert delta("dataworkflows_claim_latency_seconds_count") == 3
    assert delta("dataworkflows_group_commit_batch_size_count", writer="ledger-flush") >= 1
    assert delta("dataworkflows_group_commit_batch_size_sum", writer="ledger-flush") >= 6
    assert value(after, "dataworkflows_queue_depth", state="pending") == 0

    # the new kernel hook, seen called: one claim measurement per claim transaction
    assert {"claim.latency", "group_commit.batch"} <= spy.names()
    claims = [m for m in spy.measurements if m.name == "claim.latency"]
    assert sum(len(m.values) for m in claims) == 3
    assert all(v >= 0 for m in claims for v in m.values)


async def test_fencing_rejections_and_dead_letters_are_counted(kernel_factory, api_factory):
    spy = Spy()
    kernel = await _kernel(kernel_factory, spy)
    client = await api_factory(kernel, run_worker=False)
    workflow_id = f"m-fence-{uuid.uuid4().hex[:8]}"
    await kernel.service.apply(_flow(workflow_id))
    before = await scrape(client)
    for _ in range(2):
        await kernel.service.execute(workflow_id, trigger={})
    stale, doomed = await kernel.ledger.claim_many("test", 2)
    # another worker took the first run over: its claim is no longer current
    async with kernel.db.begin() as conn:
        await conn.execute(
            update(workflow_executions)
            .where(workflow_executions.c.id == stale.id)
            .values(fencing_token=workflow_executions.c.fencing_token + 1)
        )
    now = kernel.clock.now()
    step = StepRecord("one", "core.echo", 1, "Succeeded", {}, {}, None, now, now)
    try:
        await kernel.ledger.record_step(stale, step)
        raise AssertionError("a stale claim wrote")
    except StaleRunError:
        pass
    assert await kernel.ledger.renew("test", [stale]) == [stale]
    await kernel.ledger.finish(doomed, kernel.ledger.dead_letter_finish(doomed))

    after = await scrape(client)
    rejected = "dataworkflows_fencing_rejections_total"
    for stage in ("write", "renewal"):
        assert value(after, rejected, stage=stage) - value(before, rejected, stage=stage) == 1
    assert value(after, "dataworkflows_dead_letters_total", workflow_id=workflow_id) == 1
    assert (
        value(after, "dataworkflows_runs_finished_total", workflow_id=workflow_id, status="Failed")
        == 1
    )
    assert {"fencing.rejected", "dead_letter"} <= spy.names()


async def test_webhook_intake_time_is_measured_by_outcome(kernel_factory, api_factory):
    kernel = await _kernel(kernel_factory)
    client = await api_factory(kernel, run_worker=False)
    workflow_id = f"m-hook-{uuid.uuid4().hex[:8]}"
    await kernel.service.apply(_flow(workflow_id))
    trigger = await kernel.triggers.create(
        workflow_id, {"type": "webhook", "config": {"deliveryIdHeader": "X-Delivery"}}
    )
    before = await scrape(client)
    for _ in range(2):  # the second is a redelivery of the same event
        response = await client.post(
            f"/hooks/{trigger['id']}", json={"n": 1}, headers={"X-Delivery": "d-1"}
        )
        assert response.status == 202
    after = await scrape(client)
    name = "dataworkflows_trigger_fire_seconds_count"
    for outcome in ("started", "duplicate"):
        labels = {"trigger_type": "webhook", "outcome": outcome}
        assert value(after, name, **labels) - value(before, name, **labels) == 1


async def test_name_filter_and_openmetrics(kernel_factory, api_factory):
    kernel = await _kernel(kernel_factory)
    client = await api_factory(kernel, run_worker=False)
    only = await scrape(client, **{"name[]": "dataworkflows_queue_depth"})
    assert {name for name, _ in only} == {"dataworkflows_queue_depth"}
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


async def test_bad_query_parameters_are_refused(kernel_factory, api_factory):
    kernel = await _kernel(kernel_factory)
    client = await api_factory(kernel, run_worker=False)
    response = await client.get("/metrics", params={"format": "json"})
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "unknown_parameter"
    assert body["details"] == {"parameters": ["format"], "allowed": ["name[]"]}
    too_many = [("name[]", f"m{i}") for i in range(101)]
    response = await client.get("/metrics", params=too_many)
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_parameter"
    response = await client.get("/metrics", params={"name[]": ""})
    assert response.status == 400
    response = await client.post("/metrics")
    assert response.status == 405


async def test_a_failing_observer_changes_nothing(kernel_factory, run_workflow):
    class Broken:
        @hookimpl
        def on_engine_measurement(self, measurement: Any) -> None:
            raise RuntimeError("observer bug")

    kernel = await _kernel(kernel_factory, Broken())
    run = await run_workflow(kernel, _flow(f"m-broken-{uuid.uuid4().hex[:8]}"))
    assert run["status"] == "Succeeded"


def test_settings_are_read_from_the_environment(tmp_path) -> None:
    assert read_config({}) == MetricsConfig(enabled=True, directory=None)
    assert read_config({"DATAWORKFLOWS_METRICS": "off"}).enabled is False
    assert read_config({"PROMETHEUS_MULTIPROC_DIR": "/p"}).directory == "/p"
    both = {"PROMETHEUS_MULTIPROC_DIR": "/p", "DATAWORKFLOWS_METRICS_DIR": "/d"}
    assert read_config(both).directory == "/d"
    check_directory(str(tmp_path))
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "missing", tmp_path / "file"):
        with pytest.raises(MetricsSettingError, match="DATAWORKFLOWS_METRICS_DIR="):
            check_directory(str(bad))


async def test_metrics_off_or_misconfigured_answer_with_an_error(
    kernel_factory, api_factory, monkeypatch
):
    kernel = await _kernel(kernel_factory)
    client = await api_factory(kernel, run_worker=False)
    monkeypatch.setattr(exposition, "config", lambda: MetricsConfig(False, None))
    response = await client.get("/metrics")
    assert response.status == 404
    assert (await response.json())["code"] == "metrics_disabled"

    def misconfigured() -> MetricsConfig:
        raise MetricsSettingError("DATAWORKFLOWS_METRICS_DIR='/nope': not a writable directory")

    monkeypatch.setattr(exposition, "config", misconfigured)
    response = await client.get("/metrics")
    assert response.status == 503
    body = await response.json()
    assert body["code"] == "metrics_misconfigured" and "/nope" in body["message"]


async def test_the_ledger_s_size_is_a_gauge_per_table(kernel_factory, api_factory):
    """Issue #20: rows and bytes per ledger table, read at each scrape (PostgreSQL: the
    planner's estimate, so it is exact right after ANALYZE)."""
    from sqlalchemy import func, select, text

    from dataworkflows.ledger.retention import LEDGER_TABLES

    kernel = await _kernel(kernel_factory, Spy())
    workflow_id = f"m-size-{uuid.uuid4().hex[:8]}"
    await kernel.service.apply(_flow(workflow_id))
    for _ in range(3):
        summary, _ = await kernel.service.execute(workflow_id, trigger={})
        kernel.start_worker()
        await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
    if not kernel.settings.is_sqlite:
        async with kernel.db.begin() as conn:
            for table in LEDGER_TABLES:
                await conn.execute(text(f"ANALYZE {table.name}"))
    async with kernel.db.connect() as conn:
        exact = {
            t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in LEDGER_TABLES
        }
    client = await api_factory(kernel, run_worker=False)
    samples = await scrape(client)
    for table, rows in exact.items():
        assert value(samples, "dataworkflows_ledger_rows", table=table) == rows, table
        assert value(samples, "dataworkflows_ledger_bytes", table=table) > 0, table
    assert exact["workflow_executions"] >= 3 and exact["action_executions"] >= 6
