"""``dataworkflows plugins --check``: each installed plugin loaded on its own and checked,
with deliberately broken plugins installed as real distributions."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner

from dataworkflows import hookimpl, hookspecs
from dataworkflows.cli.main import build_cli
from dataworkflows.hookspecs import PLUGIN_API_VERSION, deprecated_hook, hookspec
from dataworkflows.plugins.check import PluginReport, check_installed, check_plugin
from dataworkflows.plugins.manager import PluginInfo

BUNDLED = {"echo", "http", "webhook", "schedule", "metrics", "slack", "monday", "tracing"}

BROKEN_IMPORT = "import dataworkflows_no_such_module\n"

WRONG_HOOKS = """
from dataworkflows import hookimpl

dataworkflows_api = ">=1,<2"


@hookimpl
def register_actions(register, colour):  # an argument the hook does not have
    pass


@hookimpl
def on_run_evnt(event):  # misspelt too: both are reported
    pass
"""

UNKNOWN_HOOK = """
from dataworkflows import hookimpl

dataworkflows_api = ">=1,<2"


@hookimpl
def register_action(register):  # misspelt
    pass
"""

BAD_TYPES = '''
from pydantic import BaseModel, ConfigDict
from dataworkflows import Action, ActionResult, TriggerType, hookimpl

dataworkflows_api = "==1.*"


class Undocumented(Action):
    type = "core.echo"  # the echo plugin's

    class Params(BaseModel):
        word: str

    async def run(self, ctx, params):
        return ActionResult.succeeded({})


class BadName(Undocumented):
    type = "Bad Name"


class Documented(TriggerType):
    type = "bad.documented"
    title = "Documented"

    class Config(BaseModel):
        """Every field documented."""

        model_config = ConfigDict(use_attribute_docstrings=True, title="A trigger")
        every: int
        """Seconds."""


@hookimpl
def register_actions(register):
    register(BadName)
    register(Undocumented)
    register(object)


@hookimpl
def register_triggers(register):
    register(Documented)
'''

UNDECLARED = """
from dataworkflows import hookimpl


@hookimpl
def on_run_event(event):
    pass
"""


def _by_name(reports: list[PluginReport]) -> dict[str, PluginReport]:
    return {report.info.name: report for report in reports}


def test_the_bundled_plugins_pass() -> None:
    reports = _by_name(check_installed())
    assert set(reports) >= BUNDLED
    for name in BUNDLED:
        assert (reports[name].problems, reports[name].warnings) == ([], []), name
    assert reports["echo"].actions == ["core.echo"]
    assert reports["webhook"].triggers == ["webhook"]
    assert reports["echo"].api == ">=1,<2"


def test_every_broken_plugin_is_reported_and_none_hides_the_others(
    install_distribution: Any,
) -> None:
    install_distribution("dataworkflows-broken", {"dw_broken": BROKEN_IMPORT}, broken="dw_broken")
    install_distribution("dataworkflows-wrong", {"dw_wrong": WRONG_HOOKS}, wrong="dw_wrong")
    install_distribution("dataworkflows-typo", {"dw_typo": UNKNOWN_HOOK}, typo="dw_typo")
    install_distribution("dataworkflows-types", {"dw_types": BAD_TYPES}, "2.5", types="dw_types")
    reports = _by_name(check_installed())

    (broken,) = reports["broken"].problems
    assert broken.startswith("cannot be imported: ModuleNotFoundError")
    misspelt, wrong = reports["wrong"].problems
    assert misspelt == "implements 'on_run_evnt', which is no hook (a misspelt name?)"
    assert wrong.startswith(
        "invalid hook implementation: Plugin 'wrong' for hook 'register_actions'"
    )
    assert "Argument(s) {'colour'} are declared in the hookimpl" in wrong
    (typo,) = reports["typo"].problems
    assert typo == "implements 'register_action', which is no hook (a misspelt name?)"

    types = reports["types"]
    assert types.origin == "'types' (dataworkflows-types 2.5)"
    assert types.api == "==1.*"
    assert types.actions == ["core.echo"]  # the two others are refused
    assert types.triggers == ["bad.documented"]
    assert any("invalid type name 'Bad Name'" in p for p in types.problems)
    assert any("not an Action subclass" in p for p in types.problems)
    assert "action core.echo: the schema has no description" in types.problems
    assert "action core.echo: property word has no description" in types.problems
    assert any(
        "action type 'core.echo' is registered by 'echo' (dataworkflows-echo 0.1.0) too" in p
        for p in types.problems
    )
    # and echo hears about the clash from its side; the other bundled plugins are clean
    assert reports["echo"].problems == [
        "action type 'core.echo' is registered by 'types' (dataworkflows-types 2.5) too: "
        "the kernel refuses to start with both installed"
    ]
    assert all(not reports[name].problems for name in BUNDLED - {"echo"})


def test_the_cli_names_each_distribution_and_exits_1(install_distribution: Any) -> None:
    install_distribution("dataworkflows-broken", {"dw_broken": BROKEN_IMPORT}, broken="dw_broken")
    install_distribution("dataworkflows-wrong", {"dw_wrong": WRONG_HOOKS}, wrong="dw_wrong")
    result = CliRunner().invoke(build_cli(), ["plugins", "--check"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("'broken' (dataworkflows-broken 1.0): cannot be imported")
    assert lines[1].startswith("'wrong' (dataworkflows-wrong 1.0): implements 'on_run_evnt'")
    assert lines[2].startswith("'wrong' (dataworkflows-wrong 1.0): invalid hook implementation")
    assert len(lines) == 3
    assert "3 problem(s) in 2 of" in result.stderr


def test_the_cli_prints_a_table_and_exits_0_when_all_is_well(install_distribution: Any) -> None:
    install_distribution("dataworkflows-quiet", {"dw_quiet": UNDECLARED}, "0.3", quiet="dw_quiet")
    result = CliRunner().invoke(build_cli(), ["plugins", "--check"])
    assert result.exit_code == 0, result.output
    header, *rows, summary = result.stdout.splitlines()
    assert header.split() == ["plugin", "distribution", "version", "API", "actions", "triggers"]
    table = {row.split()[0]: row.split()[1:] for row in rows}
    assert table["echo"] == ["dataworkflows-echo", "0.1.0", ">=1,<2", "1", "0"]
    assert table["quiet"] == ["dataworkflows-quiet", "0.3", "-", "0", "0"]
    assert summary.endswith(f"checked against plugin API {PLUGIN_API_VERSION}: no problems")
    # a plugin that declares no requirement is loaded, with a warning
    assert "warning: 'quiet' (dataworkflows-quiet 0.3): declares no plugin-API" in result.stderr


def test_plugin_modules_are_checked_too(install_distribution: Any, monkeypatch: Any) -> None:
    install_distribution("unrelated", {"dw_typo_module": UNKNOWN_HOOK})  # no entry point
    monkeypatch.setenv("DATAWORKFLOWS_PLUGIN_MODULES", "dw_typo_module,dw_missing_module")
    result = CliRunner().invoke(build_cli(), ["plugins", "--check"])
    assert result.exit_code == 1
    assert "'dw_typo_module': implements 'register_action', which is no hook" in result.stdout
    assert "'dw_missing_module': cannot be imported: ModuleNotFoundError" in result.stdout


def test_an_incompatible_plugin_is_reported_not_registered() -> None:
    class Future:
        dataworkflows_api = ">=2"

        @hookimpl
        def register_actions(self, register: Any) -> None:
            raise AssertionError("never called")

    report = check_plugin(Future(), PluginInfo("future", "dataworkflows-future", "9"))
    (problem,) = report.problems
    assert "'future' (dataworkflows-future 9) needs plugin API >=2" in problem


class RetiringSpecs:
    @hookspec(warn_on_impl=deprecated_hook("on_old", since="1.1", instead="use on_run_event"))
    def on_old(self) -> None:
        """Deprecated."""


def test_a_deprecated_hook_is_a_warning_not_a_problem() -> None:
    class Old:
        dataworkflows_api = ">=1,<2"

        @hookimpl
        def on_old(self) -> None:
            pass

    report = check_plugin(Old(), PluginInfo("old", None, None), specs=[hookspecs, RetiringSpecs])
    assert report.problems == []
    assert report.warnings == [
        "the hook 'on_old' is deprecated since plugin API 1.1 and will be removed in "
        "plugin API 2.0: use on_run_event"
    ]


MISDECLARED = '''
from pydantic import BaseModel, ConfigDict
from dataworkflows import Action, ActionResult, hookimpl

dataworkflows_api = ">=1,<2"
dataworkflows_actions = {"mis.one": "Not its title", "mis.ghost": "Never registered"}


class _Params(BaseModel):
    """Nothing to set."""

    model_config = ConfigDict(extra="forbid", title="mis parameters")


class One(Action):
    type = "mis.one"
    title = "Its title"
    Params = _Params

    async def run(self, ctx, params):
        return ActionResult.succeeded({})


class Two(Action):
    type = "mis.two"
    title = "Another"
    Params = _Params

    async def run(self, ctx, params):
        return ActionResult.succeeded({})


@hookimpl
def register_actions(register):
    register(One)
    register(Two)
'''


def _module(name: str, source: str) -> Any:
    import types

    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


def test_a_declaration_that_differs_from_the_classes_is_a_problem() -> None:
    """``dataworkflows_actions`` feeds the plugin table without importing the classes, so
    the check holds it to what the plugin registers."""
    report = check_plugin(_module("dw_mis", MISDECLARED), PluginInfo("mis", None, None))
    declared = [p for p in report.problems if "dataworkflows_actions" in p]
    assert declared == [
        "dataworkflows_actions lists 'mis.ghost', which it does not register",
        "dataworkflows_actions gives 'mis.one' the title 'Not its title'; its class says "
        "'Its title'",
        "dataworkflows_actions leaves out 'mis.two', which it registers",
    ]
    malformed = MISDECLARED.replace(
        'dataworkflows_actions = {"mis.one": "Not its title", "mis.ghost": "Never registered"}',
        'dataworkflows_actions = ["mis.one"]',
    )
    report = check_plugin(_module("dw_mis2", malformed), PluginInfo("mis2", None, None))
    assert "dataworkflows_actions must be a dict of type name to title (strings)" in (
        report.problems
    )


def test_the_plugin_table_from_declarations_is_the_table_from_the_classes() -> None:
    from dataworkflows.plugins.listing import describe_declared
    from dataworkflows.plugins.manager import load_plugins

    declared = describe_declared(load_plugins(registries=False))
    assert declared is not None  # every installed plugin declares its types
    assert declared == load_plugins().describe(schemas=False)
    # a plugin that declares nothing sends the listing the long way
    undeclared = load_plugins(registries=False, extra=[_module("dw_quiet", "x = 1\n")])
    assert describe_declared(undeclared) is None
