"""Plugin schemas are documentation: every installed action's ``parametersSchema`` and every
trigger type's ``configSchema`` (``GET /api/v1/plugins``, ``dataworkflows plugins --json``)
has a real title, a description, and a description on every property, nested models too.

A plugin whose ``Params`` / ``Config`` model lacks a docstring, or has a field without one
(``use_attribute_docstrings=True``) or without ``Field(description=...)``, fails here and in
``dataworkflows plugins --check`` (the rules are :func:`dataworkflows.plugins.check.undocumented`).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from dataworkflows import Action, ActionResult, TriggerType
from dataworkflows.common.schemas import PluginSchemaGenerator
from dataworkflows.plugins.check import undocumented  # what `plugins --check` reports
from dataworkflows.plugins.manager import load_plugins

BUNDLED_ACTIONS = {
    "core.echo",
    "http.request",
    "slack.post-message",
    "monday.get-items",
    "monday.create-item",
}
BUNDLED_TRIGGERS = {"webhook", "schedule"}
INSTALLED = load_plugins()
SCHEMAS = [
    pytest.param(r.cls.params_schema, r.cls.Params, id=name)
    for name, r in sorted(INSTALLED.actions.items())
] + [
    pytest.param(r.cls.config_schema, r.cls.Config, id=name)
    for name, r in sorted(INSTALLED.triggers.items())
]


def test_the_bundled_plugins_are_checked() -> None:
    assert BUNDLED_ACTIONS <= set(INSTALLED.actions)
    assert BUNDLED_TRIGGERS <= set(INSTALLED.triggers)


@pytest.mark.parametrize(("schema", "model"), SCHEMAS)
def test_every_installed_schema_is_documented(schema: Any, model: type[BaseModel]) -> None:
    assert undocumented(schema(), model) == []


def test_the_published_schemas_are_the_documented_ones() -> None:
    for plugin in INSTALLED.describe():
        for action in plugin["actions"]:
            model = INSTALLED.actions[action["type"]].cls.Params
            assert undocumented(action["parametersSchema"], model) == [], action["type"]
        for trigger in plugin["triggers"]:
            model = INSTALLED.triggers[trigger["type"]].cls.Config
            assert undocumented(trigger["configSchema"], model) == [], trigger["type"]


class Inner(BaseModel):
    x: int


class Bare(Action):
    type = "test.bare"

    class Params(BaseModel):
        word: str
        times: int = Field(default=1, alias="repeatTimes")
        inner: list[Inner] | None = None

    async def run(self, ctx: Any, params: Any) -> ActionResult:
        return ActionResult.succeeded({})


class Documented(Action):
    type = "test.documented"

    class Params(BaseModel):
        """What to say."""

        model_config = ConfigDict(use_attribute_docstrings=True, title="Say something")

        word: str
        """The word to say."""

    async def run(self, ctx: Any, params: Any) -> ActionResult:
        return ActionResult.succeeded({})


class BareTrigger(TriggerType):
    type = "test.bare-trigger"

    class Config(BaseModel):
        every: int


def test_a_plugin_without_descriptions_fails_the_check() -> None:
    assert undocumented(Bare.params_schema(), Bare.Params) == [
        "the schema has no description",
        "property word has no description",
        "property repeatTimes has no description",
        "property inner has no description",
        "$defs/Inner has no description",
        "property $defs/Inner/x has no description",
    ]
    assert undocumented(Documented.params_schema(), Documented.Params) == []


def test_the_kernel_titles_a_schema_the_plugin_did_not_title() -> None:
    assert Bare.params_schema()["title"] == "test.bare parameters"
    assert BareTrigger.config_schema()["title"] == "test.bare-trigger trigger configuration"
    assert Documented.params_schema()["title"] == "Say something"  # the plugin's own


class Wrapped(Action):
    type = "test.wrapped"

    class Params(BaseModel):
        """A docstring wrapped
        over lines, with ``literals``.

        A second paragraph:

        - one item
          continued
        - another"""

        model_config = ConfigDict(use_attribute_docstrings=True)

        data: dict[str, Any] = Field(default={"description": "a\nb ``c``"})
        """Data,
        wrapped."""

    async def run(self, ctx: Any, params: Any) -> ActionResult:
        return ActionResult.succeeded({})


def test_descriptions_are_published_as_markdown() -> None:
    schema = Wrapped.params_schema()
    assert schema["description"] == (
        "A docstring wrapped over lines, with `literals`.\n\n"
        "A second paragraph:\n\n"
        "- one item continued\n- another"
    )
    assert schema["properties"]["data"]["description"] == "Data, wrapped."
    # data (a default, an example) is not a description, even when it has that key
    assert schema["properties"]["data"]["default"] == {"description": "a\nb ``c``"}


def test_property_titles_are_words() -> None:
    properties = Bare.params_schema()["properties"]
    assert properties["repeatTimes"]["title"] == "Repeat times"  # pydantic: "Repeattimes"
    assert properties["word"]["title"] == "Word"
    title = PluginSchemaGenerator.get_title_from_name
    assert title(None, "fail_attempts") == "Fail attempts"  # type: ignore[arg-type]
    assert title(None, "maxURLLength") == "Max URL length"  # type: ignore[arg-type]
