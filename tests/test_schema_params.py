"""Action parameters declared as a plain JSON Schema dict (no pydantic): checked at
publish (422 with every problem and its JSON path) and before each attempt, secret
(``writeOnly``) parameters sealed at rest and masked, the schema published as written."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.common.errors import Unprocessable
from dataworkflows.db.models import workflow_definitions
from dataworkflows.secrets.fields import ENVELOPE_KEY, MASK

SECRET = "sk-canary-5e1f+/=Qz"


class Greet(Action):
    type = "test.json-greet"
    title = "Greet with a JSON Schema"
    Params = {
        "type": "object",
        "description": "Greet someone.",
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "Who to greet."},
            "times": {"type": "integer", "minimum": 1, "default": 1, "description": "How often."},
            "token": {"type": "string", "writeOnly": True, "description": "A secret."},
            "tags": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"label": {"type": "string"}},
                    "required": ["label"],
                },
            },
        },
        "required": ["name"],
        "additionalProperties": False,
    }

    async def run(self, ctx: ActionContext, params: Any) -> ActionResult:
        greeting = " ".join([f"hi {params['name']}"] * params.get("times", 1))
        return ActionResult.succeeded(
            {"greeting": greeting, "attr": params.name, "tokenLength": len(params.get("token", ""))}
        )


class GreetPlugin:
    __name__ = "json-greet"

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Greet)


def workflow(parameters: dict[str, Any], workflow_id: str = "json-greet") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "JSON greet",
        "nodes": [{"id": "greet", "actionType": "test.json-greet", "parameters": parameters}],
    }


def test_the_schema_becomes_a_params_model_with_its_errors_located() -> None:
    params = Greet.Params.model_validate({"name": "Ada", "times": 2})
    assert params["name"] == "Ada" and params.name == "Ada" and params.get("x", 7) == 7
    assert params.to_dict() == {"name": "Ada", "times": 2} and "times" in params
    assert Greet.Params.__qualname__ == "Greet.Params"
    schema = Greet.params_schema()
    assert schema["title"] == "test.json-greet parameters"  # the default title
    assert schema["properties"]["token"]["writeOnly"] is True
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        Greet.Params.model_validate({"nmae": "A", "times": 0, "tags": [{}], "token": 5})
    errors = {(e["loc"], e["msg"]) for e in caught.value.errors()}
    assert errors == {
        (("name",), "this field is required"),
        (("nmae",), "unknown field 'nmae'; did you mean 'name'?"),
        (("times",), "the value is less than the minimum of 1"),
        (("tags", 0, "label"), "this field is required"),
        (("token",), "the value is not of type 'string'"),
    }


def test_an_invalid_schema_is_an_error_when_the_plugin_is_imported() -> None:
    with pytest.raises(TypeError, match=r"action test\.bad: Params is not a valid JSON Schema "):

        class Bad(Action):
            type = "test.bad"
            Params = {"type": "object", "properties": {"n": {"type": "integr"}}}

    with pytest.raises(TypeError, match=r'must have "type": "object"'):

        class NotObject(Action):
            type = "test.not-object"
            Params = {"type": "string"}


async def test_publish_lists_every_problem_with_its_path_and_writes_nothing(
    kernel_factory: Any, api_factory: Any
) -> None:
    kernel = await kernel_factory(plugins=[GreetPlugin()], entrypoints=False)
    api = await api_factory(kernel)
    bad = workflow({"nmae": "Ada", "times": "{{ trigger.times }}", "tags": [{"lable": "x"}]})
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=bad)
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "invalid_definition"
    problems = {(p["path"], p["message"]) for p in body["details"]["problems"]}
    assert problems == {
        ("$.nodes[0].parameters.name", "this field is required"),
        ("$.nodes[0].parameters.nmae", "unknown field 'nmae'; did you mean 'name'?"),
        ("$.nodes[0].parameters.tags[0].label", "this field is required"),
    }  # tags[0].lable is allowed; "{{ trigger.times }}" is checked after rendering
    assert (await api.get("/api/v1/workflows/json-greet")).status == 404
    with pytest.raises(Unprocessable):
        await kernel.service.apply(bad)


async def test_runs_secrets_sealed_and_rendered_values_checked(
    kernel_factory: Any, api_factory: Any, run_workflow: Any
) -> None:
    kernel = await kernel_factory(plugins=[GreetPlugin()], entrypoints=False)
    api = await api_factory(kernel)
    definition = workflow({"name": "{{ trigger.name }}", "times": 2, "token": SECRET})
    run = await run_workflow(kernel, definition, trigger={"name": "Ada"})
    assert run["status"] == "Succeeded"
    assert run["actions"][0]["outputs"] == {
        "greeting": "hi Ada hi Ada",
        "attr": "Ada",
        "tokenLength": len(SECRET),
    }
    shown = await (await api.get("/api/v1/workflows/json-greet")).json()
    assert shown["definition"]["nodes"][0]["parameters"]["token"] == MASK
    async with kernel.db.connect() as conn:
        stored = (await conn.execute(select(workflow_definitions.c.definition))).scalars().all()
    text = json.dumps([s if isinstance(s, dict) else json.loads(s) for s in stored])
    assert SECRET not in text and ENVELOPE_KEY in text

    # a rendered value that breaks the schema fails the step before it runs
    failed = await run_workflow(kernel, definition, trigger={"name": ""})
    assert failed["status"] == "Failed"
    error = failed["actions"][0]["error"]
    assert error["code"] == "invalid_parameters"
    assert error["details"] == [
        {"path": "$.nodes[0].parameters.name", "message": "the value should be non-empty"}
    ]


async def test_plugins_listing_publishes_the_schema(kernel_factory: Any) -> None:
    kernel = await kernel_factory(plugins=[GreetPlugin()], entrypoints=False)
    [plugin] = [p for p in kernel.plugins.describe() if p["name"] == "json-greet"]
    schema = plugin["actions"][0]["parametersSchema"]
    assert schema["description"] == "Greet someone."
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False


def readme_example() -> types.ModuleType:
    """The README's JSON Schema example ("Writing a plugin"), as a module."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [code] = re.findall(r"^```python\n(# dataworkflows_hello_json\.py.*?)^```", readme, re.S | re.M)
    module = types.ModuleType("dataworkflows_hello_json")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    return module


async def test_the_readme_example_works_as_documented(
    kernel_factory: Any, api_factory: Any, run_workflow: Any
) -> None:
    kernel = await kernel_factory(plugins=[readme_example()], entrypoints=False)
    api = await api_factory(kernel)

    def say(parameters: dict[str, Any]) -> dict[str, Any]:
        node = {"id": "say", "actionType": "hello.say-json", "parameters": parameters}
        return {"id": "hello-json", "displayName": "Hello JSON", "nodes": [node]}

    resp = await api.post("/api/v1/workflows", json=say({"times": 0, "colour": "red"}))
    assert resp.status == 422
    problems = [(p["path"], p["message"]) for p in (await resp.json())["details"]["problems"]]
    assert problems == [
        ("$.nodes[0].parameters.name", "this field is required"),
        (
            "$.nodes[0].parameters.colour",
            "unknown field 'colour' (known fields: apiKey, name, times)",
        ),
        ("$.nodes[0].parameters.times", "the value is less than the minimum of 1"),
    ]
    run = await run_workflow(kernel, say({"name": "Ada", "times": 2, "apiKey": SECRET}))
    assert run["actions"][0]["outputs"] == {"greeting": "hi Ada hi Ada"}
    shown = await (await api.get("/api/v1/workflows/hello-json")).json()
    assert shown["definition"]["nodes"][0]["parameters"]["apiKey"] == MASK
