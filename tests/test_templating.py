"""Templates and conditions: types, strict undefined names, the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from dataworkflows.engine.templating import TemplateEngine, TemplateError

CONTEXT: dict[str, Any] = {
    "trigger": {
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "tags": ["a", "b"],
        "user": {"name": "Ada", "roles": ["admin"]},
        "items": [1, 2, 3],
        "keys": "a key named like a dict method",
        "text": "{{ 7 * 7 }}",
    },
    "nodes": {"a": {"status": "Succeeded", "outputs": {"echo": "hi"}, "error": None}},
    "execution": {"id": "e-1", "workflowId": "w", "version": 2, "principal": None},
}


@pytest.fixture
def engine() -> TemplateEngine:
    return TemplateEngine()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ trigger.count }}", 3),
        ("{{trigger.count+1}}", 4),
        ("  {{ trigger.ratio }}  ", 0.5),
        ("{{ trigger.ok }}", True),
        ("{{ trigger.none }}", None),
        ("{{ trigger.tags }}", ["a", "b"]),
        ("{{ trigger.user }}", {"name": "Ada", "roles": ["admin"]}),
        ("{{ trigger.tags | length }}", 2),
        ("{{ {'n': trigger.count, 'l': [execution.version]} }}", {"n": 3, "l": [2]}),
        ("{{ nodes.a.outputs.echo }}", "hi"),
        ("count: {{ trigger.count }}", "count: 3"),
        ("{{ trigger.count }}{{ trigger.count }}", "33"),
        ("{% if trigger.ok %}yes{% endif %}", "yes"),
        ("no template", "no template"),
    ],
)
def test_whole_expressions_keep_their_type(engine, template, expected):
    assert engine.render(template, CONTEXT) == expected


def test_trees_render_element_by_element_and_non_strings_pass_through(engine):
    value = {"a": ["{{ trigger.count }}", 1, None, False], "b": {"c": "x{{ trigger.count }}"}}
    assert engine.render(value, CONTEXT) == {"a": [3, 1, None, False], "b": {"c": "x3"}}


def test_data_is_never_rendered_again(engine):
    assert engine.render("{{ trigger.text }}", CONTEXT) == "{{ 7 * 7 }}"
    assert engine.render("<{{ trigger.text }}>", CONTEXT) == "<{{ 7 * 7 }}>"


def test_object_keys_win_over_dict_methods(engine):
    assert engine.render("{{ trigger.items }}", CONTEXT) == [1, 2, 3]
    assert engine.render("{{ trigger.keys }}", CONTEXT) == "a key named like a dict method"
    # without such a key the method is still there for the usual idiom
    rendered = engine.render("{% for k, v in trigger.user.items() %}{{ k }};{% endfor %}", CONTEXT)
    assert rendered == "name;roles;"


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("{{ trigger.missing }}", "$.p"),  # a whole expression is not turned into null
        ("{{ missing_name }}", "$.p"),
        ("{{ [trigger.missing] }}", "$.p"),
        ("{{ {'k': trigger.missing} }}", "$.p"),
        ("hello {{ trigger.user.missing }}", "$.p"),
        ("{{ nodes.b.outputs.x }}", "$.p"),
        ("{{ trigger.missing.deeper }}", "$.p"),
    ],
)
def test_undefined_is_an_error_naming_the_parameter(engine, template, path):
    with pytest.raises(TemplateError) as info:
        engine.render({"p": template}, CONTEXT, "$")
    assert info.value.path == path
    assert info.value.message.startswith("undefined:")


def test_errors_inside_expressions_are_template_errors(engine):
    with pytest.raises(TemplateError, match="ZeroDivisionError") as info:
        engine.render({"list": ["ok", "{{ 1 / 0 }}"]}, CONTEXT, "$.parameters")
    assert info.value.path == "$.parameters.list[1]"
    with pytest.raises(TemplateError, match="not a JSON number"):
        engine.render("{{ 1e308 * 10 }}", CONTEXT)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ trigger.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ cycler.mro() }}",
        "{{ joiner.mro()[1] }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ trigger.user.__class__.__base__ }}",
        "{{ '{0.__class__}'.format(trigger) }}",
        "{{ '{0.__init__.__globals__}'.format(cycler) }}",
        "{{ '{a.__class__}'.format_map({'a': trigger}) }}",
        "{{ 'x'.__add__ }}",
        "{{ trigger.count.__class__ }}",
        "{{ ('a' * 10000000) }}",
        "{{ [1, 2] * 1000000 }}",
        "{{ 10 ** 100000 }}",
        "{{ 2 ** (10 ** 5) }}",
    ],
)
def test_sandbox_escapes_fail_cleanly(engine, template):
    with pytest.raises(TemplateError) as info:
        engine.render({"p": template}, CONTEXT, "$")
    assert info.value.path == "$.p"
    assert "sandbox" in info.value.message or "unsafe" in info.value.message


def test_bounded_operators_still_work_on_small_values(engine):
    assert engine.render("{{ 'ab' * 3 }}", CONTEXT) == "ababab"
    assert engine.render("{{ 2 ** 10 }}", CONTEXT) == 1024
    assert engine.render("{{ trigger.count * 2 }}", CONTEXT) == 6
    assert engine.render("{{ 1 ** 100000 }}", CONTEXT) == 1


def test_check_lists_every_syntax_error_with_its_path(engine):
    problems = engine.check(
        {"a": "{{ ok }}", "b": "{{ broken", "c": ["{% if %}", "fine"]}, "$.parameters"
    )
    assert [p.path for p in problems] == ["$.parameters.b", "$.parameters.c[0]"]
    assert all(p.message.startswith("template syntax error") for p in problems)


def test_references_name_what_a_template_reads(engine):
    (ref,) = engine.references(
        {"a": "{{ nodes.x.outputs.y }} {{ nodes['y-z'].status }} {{ trigger.q }} {{ other }}"}
    )
    assert ref.path == "$.a"
    assert ref.names == {"nodes", "trigger", "other"}
    assert ref.node_ids == {"x", "y-z"}


# -- conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("true", True),
        ("false", False),
        ("trigger.count > 2", True),
        ("{{ trigger.count > 5 }}", False),
        ("trigger.tags", True),
        ("trigger.none", False),
        ("trigger.tags | length == 0", False),
        ("'admin' in trigger.user.roles", True),
        ("nodes.a.status == 'Succeeded' and not trigger.none", True),
        ("0", False),
        ("''", False),
        ("[]", False),
        ("{}", False),
    ],
)
def test_conditions(engine, condition, expected):
    assert engine.evaluate_condition(condition, CONTEXT) is expected


@pytest.mark.parametrize(
    "condition",
    ["", "   ", "a ==", "{% if x %}y{% endif %}", "x {{ y }}", "a b", "{{ a }} {{ b }}"],
)
def test_condition_syntax_errors(engine, condition):
    (problem,) = engine.check_condition(condition, "$.c")
    assert problem.path == "$.c"
    assert problem.message.startswith("condition syntax error")


def test_condition_errors_name_the_edge(engine):
    with pytest.raises(TemplateError, match="undefined") as info:
        engine.evaluate_condition("trigger.nope > 1", CONTEXT, "$.nodes[0].edges[1].condition")
    assert info.value.path == "$.nodes[0].edges[1].condition"
    with pytest.raises(TemplateError, match="undefined"):
        engine.evaluate_condition("trigger.nope", CONTEXT)
    with pytest.raises(TemplateError, match="sandbox"):
        engine.evaluate_condition("trigger.__class__", CONTEXT)
    with pytest.raises(TemplateError, match="sandbox"):
        engine.evaluate_condition("'x' * 100000000", CONTEXT)


def test_condition_references(engine):
    ref = engine.condition_references("nodes.a.outputs.ok and trigger.n", "$.c")
    assert ref is not None and ref.node_ids == {"a"} and ref.names == {"nodes", "trigger"}
    assert engine.condition_references("a ==", "$.c") is None


async def test_the_kernel_renders_like_the_tests_one_environment(kernel, run_workflow) -> None:
    """One environment factory: a trailing newline survives in production too."""
    from dataworkflows.engine.templating import new_environment

    assert kernel.templates.env.keep_trailing_newline is new_environment().keep_trailing_newline
    run = await run_workflow(
        kernel,
        {
            "id": "newline",
            "displayName": "Newline",
            "nodes": [
                {
                    "id": "a",
                    "actionType": "core.echo",
                    "parameters": {"message": "x {{ trigger.a }}\n"},
                }
            ],
        },
        trigger={"a": 1},
    )
    assert run["actions"][0]["outputs"] == {"echo": "x 1\n"}
