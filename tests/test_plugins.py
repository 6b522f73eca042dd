"""The plugin system: loading, registries, and every hook exercised by a real plugin.

That every hook is called by some test is checked by recording (``dataworkflows.testing``'s
hook-call monitor, ``dataworkflows_every_hook_called`` in pyproject.toml), not here."""

from __future__ import annotations

import inspect
from typing import Any

import click
import pytest
from aiohttp import web
from click.testing import CliRunner
from pydantic import BaseModel

from dataworkflows import Action, ActionResult, TriggerType, hookimpl, hookspecs
from dataworkflows.plugins.hookdoc import hookspec_functions
from dataworkflows.plugins.manager import PluginError, load_plugins

HOOK_NAMES = list(hookspec_functions())


class Shout(Action):
    type = "test.shout"
    title = "Upper-case a word"

    class Params(BaseModel):
        word: str

    async def run(self, ctx: Any, params: Params) -> ActionResult:
        return ActionResult.succeeded({"shout": params.word.upper() + "!"})


class Beacon(TriggerType):
    type = "test.beacon"
    title = "A trigger type for tests"

    class Config(BaseModel):
        every: int


class SamplePlugin:
    __name__ = "test-plugin"

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Shout)

    @hookimpl
    def register_triggers(self, register: Any) -> None:
        register(Beacon)

    @hookimpl
    def register_routes(self, app: web.Application, kernel: Any) -> None:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"hello": "from a plugin", "clock": kernel.clock.now().year})

        app.router.add_get("/plugin/hello", hello)

    @hookimpl
    def resolve_secret(self, name: str, tenant_id: str) -> str | None:
        return f"secret-for-{tenant_id}" if name == "test-token" else None

    @hookimpl
    def prepare_jinja2_environment(self, env: Any) -> None:
        env.filters["shout"] = lambda value: str(value).upper()

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command()
        def hello() -> None:
            """Say hello from a plugin."""
            click.echo("hello from a plugin command")

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)


def test_every_hookspec_is_documented() -> None:
    assert HOOK_NAMES, "no hookspecs found"
    for name in HOOK_NAMES:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        for section in ("Called when:", "Args:", "Returns:", "Since:"):
            assert section in doc, f"hookspec {name} lacks {section!r}"


def test_hook_register_actions_adds_action_types() -> None:
    plugins = load_plugins(entrypoints=False, extra=[SamplePlugin()])
    assert plugins.action("test.shout") is Shout
    (described,) = plugins.describe()
    assert described["name"] == "test-plugin"
    assert described["actions"][0]["parametersSchema"]["required"] == ["word"]


def test_hook_register_triggers_adds_trigger_types() -> None:
    plugins = load_plugins(entrypoints=False, extra=[SamplePlugin()])
    assert plugins.triggers["test.beacon"].cls is Beacon
    (described,) = plugins.describe()
    assert described["triggers"][0]["configSchema"]["required"] == ["every"]


async def test_hook_register_routes_serves_plugin_endpoints(kernel_factory, api_factory) -> None:
    kernel = await kernel_factory(plugins=[SamplePlugin()], entrypoints=False)
    api = await api_factory(kernel)
    resp = await api.get("/plugin/hello")
    assert resp.status == 200
    assert (await resp.json())["hello"] == "from a plugin"


def test_hook_resolve_secret_first_result_wins_and_env_is_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugins = load_plugins(entrypoints=False, extra=[SamplePlugin()])
    assert plugins.hook.resolve_secret(name="test-token", tenant_id="acme") == "secret-for-acme"
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_TEST_TOKEN", "from-env")
    assert plugins.hook.resolve_secret(name="test-token", tenant_id="acme") == "secret-for-acme"
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_OTHER_ONE", "env-value")
    assert plugins.hook.resolve_secret(name="other-one", tenant_id="acme") == "env-value"
    assert plugins.hook.resolve_secret(name="missing", tenant_id="acme") is None


async def test_hook_prepare_jinja2_environment_adds_filters(kernel_factory, run_workflow) -> None:
    kernel = await kernel_factory(plugins=[SamplePlugin()])
    run = await run_workflow(
        kernel,
        {
            "id": "filters",
            "displayName": "Filters",
            "nodes": [
                {
                    "id": "a",
                    "actionType": "core.echo",
                    "parameters": {"message": "{{ trigger.word | shout }}"},
                }
            ],
        },
        trigger={"word": "quiet"},
    )
    assert run["actions"][0]["outputs"] == {"echo": "QUIET"}


def test_hook_register_commands_adds_cli_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataworkflows.cli import main as cli_module

    # the CLI loads plugins inside build_cli, never at import
    assert not hasattr(cli_module, "load_plugins")
    import dataworkflows.plugins.manager as plugins_module

    original = plugins_module.load_plugins
    monkeypatch.setattr(
        plugins_module,
        "load_plugins",
        lambda **kw: original(entrypoints=False, extra=[SamplePlugin()]),
    )
    result = CliRunner().invoke(cli_module.build_cli(), ["hello"])
    assert result.exit_code == 0, result.output
    assert "hello from a plugin command" in result.output


async def test_hook_on_run_event_sees_every_event_in_order(
    kernel_factory, run_workflow, simple_echo
) -> None:
    plugin = SamplePlugin()
    kernel = await kernel_factory(plugins=[plugin])
    run = await run_workflow(kernel, simple_echo)
    mine = [e for e in plugin.events if e.execution_id == run["id"]]
    # every committed event, the enqueue's RunQueued included (tests/test_observers.py
    # checks every other path against the events table), and each step's live start
    assert [(str(e.type), e.sequence, e.durable) for e in mine] == [
        ("RunQueued", 1, True),
        ("RunStarted", 2, True),
        ("StepStarted", 2, False),
        ("StepSucceeded", 3, True),
        ("StepStarted", 3, False),
        ("StepSucceeded", 4, True),
        ("RunSucceeded", 5, True),
    ]


class Whisper(Shout):
    type = "test.whisper"


class WhisperPlugin:
    __name__ = "whisper-plugin"

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Whisper)


class RegisterWatcher:
    """A hook wrapper around the register_* hooks, recording each call it wraps."""

    __name__ = "watcher"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def register_actions(self, register: Any) -> Any:
        self.seen.append("register_actions")
        return (yield)

    @hookimpl(wrapper=True)
    def register_triggers(self, register: Any) -> Any:
        self.seen.append("register_triggers")
        return (yield)


def test_register_hooks_go_through_pluggy_wrappers_and_tracing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    watcher = RegisterWatcher()
    plugins = load_plugins(
        entrypoints=False, extra=[SamplePlugin(), WhisperPlugin(), watcher], trace=True
    )
    # one wrapped call per plugin that implements the hook (two register actions, one
    # registers triggers), and each registration is still attributed to its plugin
    assert watcher.seen == ["register_actions", "register_actions", "register_triggers"]
    assert plugins.actions["test.shout"].plugin.name == "test-plugin"
    assert plugins.actions["test.whisper"].plugin.name == "whisper-plugin"
    assert plugins.triggers["test.beacon"].plugin.name == "test-plugin"
    trace = capsys.readouterr().err
    assert trace.count("register_actions [hook]") == 2, trace
    assert trace.count("register_triggers [hook]") == 1, trace


def test_duplicate_action_type_names_both_plugins() -> None:
    class Other:
        __name__ = "other-plugin"

        @hookimpl
        def register_actions(self, register: Any) -> None:
            register(Shout)

    with pytest.raises(
        PluginError, match=r"test\.shout.*registered twice.*test-plugin.*other-plugin"
    ):
        load_plugins(entrypoints=False, extra=[SamplePlugin(), Other()])


@pytest.mark.parametrize("bad_type", ["Bad Name", "", "UPPER.case", None])
def test_invalid_type_names_are_refused(bad_type: Any) -> None:
    class Bad(Action):
        type = bad_type

    class Plugin:
        __name__ = "bad-plugin"

        @hookimpl
        def register_actions(self, register: Any) -> None:
            register(Bad)

    with pytest.raises(PluginError, match="invalid type name"):
        load_plugins(entrypoints=False, extra=[Plugin()])


def test_registering_a_non_action_is_refused() -> None:
    class Plugin:
        __name__ = "confused"

        @hookimpl
        def register_actions(self, register: Any) -> None:
            register(object)

    with pytest.raises(PluginError, match="not an Action subclass"):
        load_plugins(entrypoints=False, extra=[Plugin()])


def test_misspelt_hook_is_an_error() -> None:
    class Plugin:
        __name__ = "typo"

        @hookimpl
        def register_action(self, register: Any) -> None:  # missing "s"
            pass

    with pytest.raises(PluginError, match="hook that does not exist"):
        load_plugins(entrypoints=False, extra=[Plugin()])


def test_allow_list_loads_only_named_plugins() -> None:
    assert load_plugins(allow="dataworkflows-echo").action("core.echo") is not None
    assert load_plugins(allow="echo").action("core.echo") is not None
    assert load_plugins(allow="").actions == {}
    with pytest.raises(PluginError, match="not installed: dataworkflows-nope"):
        load_plugins(allow="dataworkflows-echo,dataworkflows-nope")


def test_installed_entry_points_are_found_with_their_distribution() -> None:
    plugins = load_plugins()
    echo = plugins.plugins["echo"]
    assert (echo.distribution, bool(echo.version)) == ("dataworkflows-echo", True)


async def test_kernel_with_no_plugins_starts_and_refuses_unknown_actions(
    kernel_factory, api_factory, simple_echo
):
    kernel = await kernel_factory(entrypoints=False)
    api = await api_factory(kernel)
    assert (await (await api.get("/api/v1/plugins")).json())["plugins"] == []
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    assert resp.status == 422
    problems = (await resp.json())["details"]["problems"]
    assert [p["path"] for p in problems] == ["$.nodes[0].actionType", "$.nodes[1].actionType"]
    assert all("core.echo" in p["message"] for p in problems)
