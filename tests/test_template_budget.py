"""Issue #24: every template and condition evaluation is bounded, and the costly ones
never run on the event loop.

The hostile corpus below is rendered with a small budget; each entry must stop with a
clear error (the budget, or the sandbox refusing), never run to completion. Nothing here
asserts on time: the operation counter is deterministic, and the wall-clock limit is
only checked by what it reports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jinja2
import pytest

from dataworkflows.common.jsonlimits import JSONLimitError, check_limits, loads_limited
from dataworkflows.engine.templating import (
    TemplateBudgetExceeded,
    TemplateEngine,
    TemplateError,
    TemplateLimits,
)

NESTED = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}x"
DYNAMIC_NESTED = (
    "{% for i in range(trigger.n) %}{% for j in range(trigger.n) %}{% endfor %}{% endfor %}x"
)

CONTEXT: dict[str, Any] = {
    "trigger": {"n": 99999, "big": list(range(50_000)), "text": "x" * 100_000},
    "nodes": {},
}

#: over the budget whatever the engine's speed: each is stopped by the counters
OVER_BUDGET = {
    "nested loops": NESTED,
    "nested loops over data": DYNAMIC_NESTED,
    "loop in a loop with a body": (
        "{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}"
    ),
    "string doubling with ~": (
        "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "list doubling with +": (
        "{% set ns = namespace(s=[1] * 1000) %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "output in a loop": "{% for i in range(1000) %}{{ trigger.text }}{% endfor %}",
    "repeated string multiplication": ("{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}"),
    "join over a large list in a loop": (
        "{% for i in range(100) %}{{ range(99999)|join(',') }}{% endfor %}"
    ),
    "join over data in a loop": "{% for i in range(100) %}{{ trigger.big|join }}{% endfor %}",
    "macro fan-out recursion": (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(60) }}"
    ),
    "unbounded macro recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "recursive loop over ranges": (
        "{% for x in range(3) recursive %}{{ loop(range(99999)) }}{% endfor %}"
    ),
    "center width": "{{ 'x'|center(1000000000) }}",
    "ljust width": "{{ 'x'.ljust(1000000000) }}",
    "printf width": "{{ '%1000000000d' % 1 }}",
    "printf star width": "{{ '%*d' % (1000000000, 1) }}",
    "format filter width": "{{ '%1000000000d'|format(1) }}",
    "str.format width": "{{ '{:>1000000000}'.format(1) }}",
    "replace blow-up": "{{ trigger.text|replace('x', trigger.text) }}",
    "batch fill": "{{ [1]|batch(1000000000, 0)|list }}",
    "lipsum": "{{ lipsum(1000000000) }}",
    "sort chain": "{{ range(99999)|list|sort|list|sort|list|sort|list|sort|list|sort|length }}",
    "list building": "{% set l = [] %}{% for i in range(99999) %}{% set _ = l.append(l) %}"
    "{% endfor %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
}

#: refused by the sandbox outright (attribute escapes, oversized single operations)
REFUSED = {
    "class escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals escape": "{{ cycler.__init__.__globals__ }}",
    "lipsum globals": "{{ lipsum.__globals__['os'] }}",
    "loop internals": "{% for x in [1] %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    "format attribute escape": "{{ '{0.__class__.__mro__}'.format('') }}",
    "dunder item": "{{ trigger['__class__'] }}",
    "huge repeat": "{{ 'x' * 100000000 }}",
    "huge power": "{{ (2 ** 4000) ** 4000 }}",
    "huge range": "{{ range(100000000)|list }}",
}


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine(limits=TemplateLimits(max_operations=200_000, timeout=30.0))


@pytest.mark.parametrize("template", OVER_BUDGET.values(), ids=OVER_BUDGET.keys())
def test_hostile_templates_stop_at_the_budget(engine: TemplateEngine, template: str) -> None:
    with pytest.raises(TemplateBudgetExceeded) as caught:
        engine.render({"p": template}, CONTEXT, "$.nodes[0].parameters")
    assert caught.value.code == "template_budget_exceeded"
    assert caught.value.path == "$.nodes[0].parameters.p"
    assert "over its budget" in caught.value.message


@pytest.mark.parametrize("template", REFUSED.values(), ids=REFUSED.keys())
def test_hostile_templates_refused_by_the_sandbox(engine: TemplateEngine, template: str) -> None:
    with pytest.raises(TemplateError) as caught:
        engine.render(template, CONTEXT)
    assert caught.value.code in ("template_error", "template_budget_exceeded")


@pytest.mark.parametrize(
    "condition",
    [
        "range(trigger.n)|join(',')|replace(',', trigger.text)|length > 0",
        "(range(99999)|list|sort|list|sort|list|sort|list|sort|list|sort|length) > 0",
        "trigger.text|center(1000000000)",
    ],
)
def test_hostile_conditions_stop_at_the_budget(engine: TemplateEngine, condition: str) -> None:
    with pytest.raises(TemplateBudgetExceeded):
        engine.evaluate_condition(condition, CONTEXT, "$.nodes[0].edges[0].condition")


def test_the_wall_clock_limit_stops_an_evaluation_the_counters_allow() -> None:
    engine = TemplateEngine(limits=TemplateLimits(max_operations=10**12, timeout=0.2))
    with pytest.raises(TemplateBudgetExceeded, match=r"took longer than 0\.2 s"):
        engine.render(DYNAMIC_NESTED, CONTEXT)


def test_ordinary_templates_fit_the_budget(engine: TemplateEngine) -> None:
    ctx = {"trigger": {"items": [{"n": i} for i in range(1000)], "name": "Ada"}, "nodes": {}}
    template = "{% for it in trigger.items %}{{ it.n }},{% endfor %}{{ trigger.name|upper }}"
    assert engine.render(template, ctx).endswith("999,ADA")
    assert engine.render("{{ trigger.items|map(attribute='n')|sum }}", ctx) == 499500
    assert engine.render("{{ '%05d|%s' % (7, 'x') }}", ctx) == "00007|x"
    assert engine.render("{{ '{:>5}'.format(1) }}", ctx) == "    1"
    assert engine.evaluate_condition("trigger.items|length > 10", ctx) is True


def test_compiling_runs_no_template_code(engine: TemplateEngine) -> None:
    # constant folding is off: these would otherwise be evaluated at publish time
    for template in ("{{ 'x'|center(1000000000) }}", "{{ ('x' * 900000)|replace('x', 'yy') }}"):
        assert engine.check(template) == []
        assert engine.check_condition(template.strip("{} ")) == []


def test_publish_time_shape_check(engine: TemplateEngine) -> None:
    [problem] = engine.shape_problems({"a": NESTED, "b": DYNAMIC_NESTED}, "$.p")
    assert problem.path == "$.p.a"
    assert "9,999,800,001" in problem.message
    [product] = engine.shape_problems("{{ 'ab' * 10000000 }}")
    assert "20,000,000" in product.message
    assert engine.shape_problems("{% for i in range(10) %}{{ i }}{% endfor %}") == []


def test_cheap_shapes_are_recognised(engine: TemplateEngine) -> None:
    cheap = [
        "{{ trigger.count }}",
        "Hello {{ trigger.user.name|default('you')|upper }}!",
        "{% if trigger.ok %}{{ nodes.a.outputs.x ~ '!' }}{% endif %}",
        {"a": ["{{ trigger.items|length }}", 3], "b": "plain"},
        "{% for it in trigger.items %}{{ loop.index }}: {{ it.sku }}{% endfor %}",
    ]
    costly = [
        NESTED,
        "{{ range(10)|list }}",
        "{{ trigger.name.upper() }}",
        "{{ trigger.name|center(10) }}",
        "{% macro m() %}{% endmacro %}{{ m() }}",
        "{{ trigger.x }}" + " " * 3000,
    ]
    assert all(engine.is_cheap(v) for v in cheap)
    assert not any(engine.is_cheap(v) for v in costly)
    assert engine.condition_is_cheap("nodes.a.outputs.ok and trigger.n > 2")
    assert not engine.condition_is_cheap("range(trigger.n)|list|length > 2")


def test_template_caches_are_lru_bounded() -> None:
    engine = TemplateEngine(limits=TemplateLimits(cache_size=3))
    for i in range(10):
        engine.render(f"{{{{ trigger.n + {i} }}}}", CONTEXT)
        engine.evaluate_condition(f"trigger.n > {i}", CONTEXT)
        assert engine.is_cheap(f"{{{{ {i} }}}}")
    assert len(engine._cache) == 3
    assert len(engine._conditions) == 3
    assert len(engine._cheap) == 3
    assert engine.render("{{ trigger.n + 9 }}", CONTEXT) == 100008  # still served


# -- off the event loop ------------------------------------------------------------------


async def test_costly_evaluations_run_in_a_worker_process() -> None:
    engine = TemplateEngine(limits=TemplateLimits(timeout=5.0, workers=1))
    try:
        assert await engine.render_async("{{ trigger.n + 1 }}", CONTEXT) == 100000
        loop = "{% for i in trigger.big %}{{ i }}{% endfor %}"
        small = {"trigger": {"big": [0, 1, 2]}}
        assert await engine.render_async(loop, small) == "012"
        assert engine.pool.offloaded == 0  # cheap: inline
        text = await engine.render_async("{% for i in range(3) %}{{ i }}{% endfor %}", CONTEXT)
        assert text == "012"
        assert engine.pool.offloaded == 1
        # a cheap shape that does not fit the inline budget is evaluated again in a worker
        assert len(await engine.render_async(loop, CONTEXT)) > 50_000
        assert engine.pool.offloaded == 2
        with pytest.raises(TemplateBudgetExceeded) as caught:
            await engine.render_async({"p": NESTED}, CONTEXT, "$.nodes[0].parameters")
        assert caught.value.path == "$.nodes[0].parameters.p"
        assert await engine.evaluate_condition_async("range(5)|list|length == 5", CONTEXT)
        with pytest.raises(TemplateError, match="undefined"):
            await engine.render_async("{{ range(3)|list ~ trigger.nope }}", CONTEXT)
        assert engine.pool.killed == 0
    finally:
        await engine.close()


async def test_a_worker_that_overruns_the_wall_clock_is_killed() -> None:
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.globals["stall"] = lambda: time.sleep(60)  # e.g. a plugin global that hangs
    engine = TemplateEngine(env, TemplateLimits(timeout=0.5, workers=1))
    try:
        with pytest.raises(TemplateBudgetExceeded, match=r"took longer than 0\.5 s"):
            await engine.render_async("{{ stall() }}", CONTEXT, "$.p")
        assert engine.pool.killed == 1
        # the next evaluation gets a fresh process
        assert await engine.render_async("{{ range(2)|list }}", CONTEXT) == [0, 1]
    finally:
        await engine.close()


async def test_a_costly_evaluation_leaves_the_event_loop_free() -> None:
    engine = TemplateEngine(limits=TemplateLimits(max_operations=10**12, timeout=1.0))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(TemplateBudgetExceeded, match="took longer than 1 s"):
            await engine.render_async(DYNAMIC_NESTED, CONTEXT)
    finally:
        task.cancel()
        await engine.close()
    # on the event loop the ticker could not have run at all while it was evaluated
    assert ticks > 100


# -- JSON bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        (b"[" * 500_000 + b"]" * 500_000, "depth"),
        (b"[" * 1_000_000, "depth"),
        (b'{"a": ' * 65 + b"1" + b"}" * 65, "depth"),
        (b'{"n": ' + b"9" * 101 + b"}", "numberLength"),
        (b'{"n": 1' + b"0" * 200 + b".5e3}", "numberLength"),
    ],
)
def test_json_limits_refuse_before_parsing(raw: bytes, limit: str) -> None:
    with pytest.raises(JSONLimitError) as caught:
        loads_limited(raw)
    assert caught.value.limit == limit


def test_json_limits_let_ordinary_bodies_through() -> None:
    deep_but_fine = b"[" * 64 + b"]" * 64
    assert loads_limited(deep_but_fine) is not None
    strings = b'{"s": "' + b"[" * 1000 + b"9" * 1000 + b'", "n": 12.5}'
    assert loads_limited(strings)["n"] == 12.5
    check_limits('{"s": "\\"[[[[", "list": [[1], [2], {"a": [3]}]}', max_depth=4)
    with pytest.raises(ValueError, match="too large"):
        loads_limited(b"[1e999]")
    with pytest.raises(ValueError, match="not a JSON value"):
        loads_limited(b"[NaN]")


async def test_a_context_that_cannot_reach_a_worker_is_a_template_error() -> None:
    engine = TemplateEngine(limits=TemplateLimits(workers=1))
    try:
        with pytest.raises(TemplateError, match="cannot be sent to a worker"):
            await engine.render_async("{{ range(2)|list }}", {"x": lambda: 1}, "$.p")
        assert await engine.render_async("{{ range(2)|list }}", {}) == [0, 1]
    finally:
        await engine.close()


async def test_the_pool_can_start_its_processes_ahead() -> None:
    engine = TemplateEngine(limits=TemplateLimits(workers=2))
    try:
        await engine.pool.start()
        pids = {w.process.pid for w in engine.pool._all}
        assert len(pids) == 2
        assert await engine.render_async("{{ range(2)|list }}", {}) == [0, 1]
        assert {w.process.pid for w in engine.pool._all} == pids  # no new fork
    finally:
        await engine.close()
    assert not engine.pool._all


def test_worker_processes_exit_when_the_engine_process_dies() -> None:
    """An engine killed outright (kill -9) leaves no template process behind."""
    import subprocess
    import sys

    script = (
        "import asyncio, os\n"
        "from dataworkflows.engine.templating import TemplateEngine\n"
        "async def main():\n"
        "    engine = TemplateEngine()\n"
        "    await engine.pool.start()\n"
        "    print(*[w.process.pid for w in engine.pool._all], flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        proc.kill()
        proc.wait(timeout=30)
    for pid in pids:  # each reads EOF on its pipe and exits; reaped by init
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a process we cannot wait for (not our child)
        assert not _alive(pid), f"template process {pid} outlived its engine"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
