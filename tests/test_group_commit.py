"""Group commit: concurrent writes share transactions, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from dataworkflows.common.errors import Conflict, NotFound
from dataworkflows.db.models import execution_events, workflow_executions
from dataworkflows.db.transient import RetryPolicy
from dataworkflows.ledger.group_commit import GroupCommit

FAST = RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.002)


class _Recorder:
    def __init__(self, fail_item: Any = None, fail_batch: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.fail_item = fail_item
        self.fail_batch = fail_batch

    async def write(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        await asyncio.sleep(0)  # the "commit": others may queue meanwhile
        if self.fail_batch:
            raise RuntimeError("the whole batch failed")
        return [
            ValueError(f"refused {item}") if item == self.fail_item else item * 10 for item in items
        ]


async def test_concurrent_submissions_share_a_batch_and_get_their_own_results():
    recorder = _Recorder()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.write, name="t")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert recorder.batches == [list(range(10))]


async def test_max_batch_splits_and_later_submissions_wait_for_the_next_batch():
    recorder = _Recorder()
    batcher: GroupCommit[int, int] = GroupCommit(recorder.write, max_batch=4, name="t")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert await batcher.submit(11) == 110  # an idle batcher writes a lone item at once
    assert recorder.batches[-1] == [11]


async def test_a_refused_item_fails_only_its_caller():
    batcher: GroupCommit[int, int] = GroupCommit(_Recorder(fail_item=3).write, name="t")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    assert [r if not isinstance(r, Exception) else str(r) for r in results] == [
        0,
        10,
        20,
        "refused 3",
        40,
    ]


async def test_a_failed_batch_fails_every_caller_in_it():
    batcher: GroupCommit[int, int] = GroupCommit(_Recorder(fail_batch=True).write, name="t")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert [str(r) for r in results] == ["the whole batch failed"] * 3


async def test_a_batch_failed_by_one_item_is_split_so_only_that_item_fails():
    """A poisoned item makes its whole batch's statement fail (as a value the database
    refuses does): the items are written one by one, and only the poisoned one fails."""
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0)
        if 3 in items:
            raise ValueError("the database refused the batch")
        return [item * 10 for item in items]

    batcher: GroupCommit[int, int] = GroupCommit(write, name="t")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert [r if not isinstance(r, Exception) else str(r) for r in results] == [
        0,
        10,
        20,
        "the database refused the batch",
        40,
        50,
    ]
    assert batches == [[0, 1, 2, 3, 4, 5], [0], [1], [2], [3], [4], [5]]


def _connection_lost() -> Exception:
    return OperationalError(
        "INSERT",
        {},
        ConnectionResetError("server closed the connection"),
        connection_invalidated=True,
    )


async def test_a_transient_error_is_retried_and_no_caller_sees_it():
    calls: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) < 3:
            raise _connection_lost()
        return [item * 10 for item in items]

    batcher: GroupCommit[int, int] = GroupCommit(write, name="t", retry=FAST)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(4))) == [0, 10, 20, 30]
    assert calls == [[0, 1, 2, 3]] * 3  # the same batch again, never split


async def test_transient_errors_are_retried_a_bounded_number_of_times():
    calls = 0

    async def write(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        raise _connection_lost()

    batcher: GroupCommit[int, int] = GroupCommit(write, name="t", retry=FAST)
    with pytest.raises(OperationalError):
        await batcher.submit(1)
    assert calls == FAST.attempts


async def test_submitters_wait_for_room_when_max_pending_items_wait():
    release, writing = asyncio.Event(), asyncio.Event()
    high = 0

    async def write(items: list[int]) -> list[int]:
        nonlocal high
        high = max(high, batcher.pending)
        writing.set()
        await release.wait()
        return items

    batcher: GroupCommit[int, int] = GroupCommit(write, name="t", max_batch=2, max_pending=4)
    callers = [asyncio.create_task(batcher.submit(i)) for i in range(50)]
    await writing.wait()
    assert batcher.pending == 4  # the 46 others wait outside
    release.set()
    assert await asyncio.gather(*callers) == list(range(50))
    assert high == 4 and batcher.pending == 0


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(_Recorder().write, max_batch=0, name="t")


async def test_concurrent_enqueues_share_transactions_and_keep_their_own_outcomes(
    kernel, simple_echo, count_commits
):
    """20 executes at once: one shared request id, an archived and an unknown workflow."""
    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    other = copy.deepcopy(simple_echo) | {"id": "archived-echo"}
    await kernel.service.create_workflow(other, auto_activate=True)
    await kernel.service.archive("archived-echo")

    with count_commits(kernel) as counted:
        calls = (
            [kernel.service.execute("simple-echo", trigger={"i": i}) for i in range(10)]
            + [kernel.service.execute("simple-echo", request_id="same") for _ in range(5)]
            + [kernel.service.execute("archived-echo") for _ in range(3)]
            + [kernel.service.execute("no-such-workflow") for _ in range(2)]
        )
        results = await asyncio.gather(*calls, return_exceptions=True)
    commits = counted.count

    fresh, same, archived, unknown = (
        results[:10],
        results[10:15],
        results[15:18],
        results[18:],
    )
    assert all(created for _summary, created in fresh)
    assert len({summary["executionId"] for summary, _ in fresh}) == 10
    assert sorted(created for _summary, created in same) == [False] * 4 + [True]
    assert len({summary["executionId"] for summary, _ in same}) == 1
    assert all(isinstance(r, Conflict) and r.code == "workflow_not_active" for r in archived)
    assert all(isinstance(r, NotFound) and r.code == "workflow_not_found" for r in unknown)
    # 11 runs in one transaction, not one each (the duplicates' reads commit nothing)
    assert commits == 1

    async with kernel.db.connect() as conn:
        runs = (
            await conn.execute(
                select(workflow_executions.c.workflow_id, func.count()).group_by(
                    workflow_executions.c.workflow_id
                )
            )
        ).all()
        queued = (
            await conn.execute(select(func.count()).where(execution_events.c.type == "RunQueued"))
        ).scalar_one()
    assert runs == [("simple-echo", 11)]
    assert queued == 11


async def test_runs_ending_together_are_fenced_in_one_statement(kernel, simple_echo):
    """Ten runs that finish in the same batch all end Succeeded, each with its own events."""
    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    summaries = await asyncio.gather(
        *(kernel.service.execute("simple-echo", trigger={"i": i}) for i in range(10))
    )
    claimed = await kernel.ledger.claim_many("test-owner", 10)
    assert len(claimed) == 10

    fences: list[int] = []  # runs fenced by each UPDATE of workflow_executions

    ids = {form for run in claimed for form in (run.id, run.id.hex, str(run.id))}

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE WORKFLOW_EXECUTIONS"):
            values = parameters.values() if isinstance(parameters, dict) else parameters
            fences.append(sum(1 for value in values if value in ids))

    event.listen(kernel.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        statuses = await asyncio.gather(*(kernel.conductor.execute(run) for run in claimed))
    finally:
        event.remove(kernel.db.engine.sync_engine, "before_cursor_execute", record)
    assert statuses == ["Succeeded"] * 10
    # 10 step writes that go on and 10 ends: every run fenced once per write, and batches
    # fence several runs in one statement instead of one statement per run
    assert sum(fences) == 20, fences
    assert len(fences) < 20 and max(fences) > 1, fences
    for summary, _created in summaries:
        events = await kernel.service.get_events(summary["executionId"])
        assert [e["type"] for e in events] == [
            "RunQueued",
            "RunStarted",
            "StepSucceeded",
            "StepSucceeded",
            "RunSucceeded",
        ]


# -- runs started in the enqueue transaction ---------------------------------------------


async def test_a_free_worker_slot_takes_the_run_in_the_enqueue_transaction(kernel, simple_echo):
    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    kernel.start_worker()
    await asyncio.sleep(0)  # the worker loop is running
    summary, created = await kernel.service.execute("simple-echo", trigger={"x": 1})
    # the answer comes from the inserted row: it was written Running, not claimed later
    assert created and summary["status"] == "Running"
    run_id = uuid.UUID(summary["executionId"])
    status = await kernel.ledger.wait_until_final(run_id, timeout=30)
    assert status == "Succeeded"
    assert (await kernel.ledger.get_execution(run_id))["fencing_token"] == 1  # one claim
    events = await kernel.service.get_events(summary["executionId"])
    assert [(e["sequence"], e["type"]) for e in events][:2] == [
        (1, "RunQueued"),
        (2, "RunStarted"),
    ]
    assert events[1]["payload"] == {"owner": kernel.worker.owner, "version": 1}
    assert kernel.worker._reserved == 0


async def test_a_full_worker_leaves_the_run_pending_for_the_claim_loop(kernel_factory, simple_echo):
    kernel = await kernel_factory(worker_concurrency=1)
    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    assert kernel.worker._reserve() is None  # not running: nothing to promise
    kernel.start_worker()
    await asyncio.sleep(0)
    owner = kernel.worker._reserve()  # the only slot, as an enqueue in flight would hold it
    assert owner == kernel.worker.owner
    summary, _ = await kernel.service.execute("simple-echo")
    assert summary["status"] == "Pending"
    kernel.worker._reserved -= 1  # the slot is free again, as when that enqueue ends:
    kernel.worker.wake()  # the claim loop takes the run
    status = await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), timeout=30)
    assert status == "Succeeded"
    assert kernel.worker._reserved == 0


async def test_a_refused_enqueue_gives_the_slot_back(kernel, simple_echo):
    kernel.start_worker()
    await asyncio.sleep(0)
    with pytest.raises(NotFound):
        await kernel.service.execute("no-such-workflow")
    await asyncio.sleep(0)  # the slot is returned when the write is over
    assert kernel.worker._reserved == 0


async def test_a_run_claimed_for_a_caller_that_went_away_still_runs(kernel, simple_echo):
    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    kernel.start_worker()
    await asyncio.sleep(0)
    caller = asyncio.create_task(kernel.service.execute("simple-echo", request_id="gone"))
    await asyncio.sleep(0)  # the enqueue is on its way
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    row = None
    for _ in range(200):  # the write goes on without its caller; wait for the row
        row = await kernel.ledger.get_execution_by_request("simple-echo", "gone")
        if row is not None:
            break
        await asyncio.sleep(0.01)
    assert row is not None
    # the worker adopted it: it ends now, not after its lease (30 s) expires
    assert await kernel.ledger.wait_until_final(row["id"], timeout=10) == "Succeeded"
